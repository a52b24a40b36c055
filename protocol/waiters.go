package protocol

import "strings"

// WaiterKey is the key in WaitersKV recording that runID waits on topic.
func WaiterKey(ns, topic, runID string) string { return ns + "." + topic + "." + runID }

// WaiterFilter selects every waiter on topic.
func WaiterFilter(ns, topic string) string { return ns + "." + topic + ".*" }

// RunIDFromWaiterKey extracts the run ID (the last token).
func RunIDFromWaiterKey(k string) string { return k[strings.LastIndexByte(k, '.')+1:] }

// IndexKey is the key of a run's summary in RunsKV.
func IndexKey(ns, runID string) string { return ns + "." + runID }

// IndexFilter selects every run of a namespace in RunsKV.
func IndexFilter(ns string) string { return ns + ".*" }

// LeaseKey is the key of a run's ownership lease in LeasesKV.
func LeaseKey(ns, runID string) string { return ns + "." + runID }

// KVSubject is the subject a KV bucket stores key under.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }
