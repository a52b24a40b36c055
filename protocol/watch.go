package protocol

// DamageWatchGroup is the queue group in which executors watch run
// subjects (RunsFilter) for messages that cannot be read, so a run damaged
// while nobody works on it is parked at once (docs/adr/0007). Each
// published message reaches one executor of the group.
const DamageWatchGroup = "polos-damage-watch"
