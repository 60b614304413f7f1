//! Partition choice by key, stable across processes and restarts.

/// The partition of `key` among `partitions`: CRC-32 of the key, like librdkafka's
/// `consistent` partitioner, so the choice never depends on the process.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    crc32fast::hash(key) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_partition() {
        assert_eq!(partition_for_key(b"ep_1", 8), partition_for_key(b"ep_1", 8));
    }

    #[test]
    fn keys_spread_over_partitions() {
        let used: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| partition_for_key(format!("key-{i}").as_bytes(), 8))
            .collect();
        assert_eq!(used.len(), 8);
    }
}
