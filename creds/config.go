package creds

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/polos-run/polos/protocol"
)

// NATSConfig renders the `accounts` block of a nats-server configuration
// that gives every namespace its own account with JetStream enabled, and
// every identity its role's permissions (protocol.RolePermissions). The
// embedded server is configured from this text; for an external server or
// cluster, `polosd creds nats-config` prints it (only public keys: it holds
// no secret).
func NATSConfig(ids []Identity) string {
	byNS := map[string][]Identity{}
	for _, id := range ids {
		byNS[id.Namespace] = append(byNS[id.Namespace], id)
	}
	var nss []string
	for ns := range byNS {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	var b strings.Builder
	b.WriteString("# Polos: one account per namespace, one user per identity (generated; see docs/security.md).\n")
	b.WriteString("accounts {\n")
	for _, ns := range nss {
		fmt.Fprintf(&b, "  %s: {\n    jetstream: enabled\n    users: [\n", strconv.Quote(ns))
		for _, id := range byNS[ns] {
			p := protocol.RolePermissions(id.Role, id.Namespace, id.Name)
			fmt.Fprintf(&b, "      # %s\n      {nkey: %s, permissions: {", id, strconv.Quote(id.PublicKey))
			var parts []string
			if s := permMap(p.PubAllow, p.PubDeny); s != "" {
				parts = append(parts, "publish: "+s)
			}
			if s := permMap(p.SubAllow, p.SubDeny); s != "" {
				parts = append(parts, "subscribe: "+s)
			}
			if p.AllowResponses {
				parts = append(parts, "allow_responses: true")
			}
			b.WriteString(strings.Join(parts, ", "))
			b.WriteString("}}\n")
		}
		b.WriteString("    ]\n  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func permMap(allow, deny []string) string {
	var parts []string
	if len(allow) > 0 {
		parts = append(parts, "allow: "+quoteList(allow))
	}
	if len(deny) > 0 {
		parts = append(parts, "deny: "+quoteList(deny))
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
