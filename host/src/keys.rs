//! The online key layout, shared by the writer, every reader and the aggregation state:
//! one hash per (feature set, version, entity) under `<prefix>:<set>:v<version>`, the entity
//! in braces (the cluster hash tag, so a future Redis Cluster keeps an entity's keys
//! together), and two counters per set version.

/// The prefix of every key of a feature set version: `<prefix>:<set>:v<version>`.
pub fn set_prefix(prefix: &str, set: &str, version: u32) -> String {
    format!("{prefix}:{set}:v{version}")
}

/// The hash of an entity under a set version's prefix: `<set prefix>:{<entity>}`.
pub fn entity_hash(set_prefix: &str, entity: &str) -> String {
    format!("{set_prefix}:{{{entity}}}")
}

/// The hash of the state of an `aggregate` step keyed by a field other than the entity.
pub fn step_hash(set_prefix: &str, step: &str, key: &str) -> String {
    format!("{set_prefix}:{step}:{{{key}}}")
}

/// The counter holding the last applied input sequence of a set version.
pub fn applied_counter(set_prefix: &str) -> String {
    format!("{set_prefix}:_applied")
}

/// The counter of events a set version refused as late.
pub fn late_counter(set_prefix: &str) -> String {
    format!("{set_prefix}:_late")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_layout_is_the_documented_one() {
        let prefix = super::set_prefix("sluice", "users", 2);
        assert_eq!(prefix, "sluice:users:v2");
        assert_eq!(super::entity_hash(&prefix, "u1"), "sluice:users:v2:{u1}");
        assert_eq!(
            super::step_hash(&prefix, "by_ip", "1.2.3.4"),
            "sluice:users:v2:by_ip:{1.2.3.4}"
        );
        assert_eq!(super::applied_counter(&prefix), "sluice:users:v2:_applied");
        assert_eq!(super::late_counter(&prefix), "sluice:users:v2:_late");
    }
}
