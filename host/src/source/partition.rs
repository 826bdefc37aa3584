//! Where an event goes: by its key, with Kafka's default partitioner
//! (murmur2), so a key lands where a Java client would put it; an event
//! without a key by its identity (`source` and `id`), so that a resend lands
//! where the original went and meets its idempotency mark (state,
//! idempotency sets and cursors are per partition).

/// Kafka's murmur2 hash of `data`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (Kafka: `toPositive(murmur2) % n`).
pub fn for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// The partition of `ev` among `partitions`: by key, else by `source` +
/// `id`; `None` for an event with neither (it cannot be recognised when
/// sent again, so any partition will do).
pub fn for_event(ev: &sluice_wire::OwnedEvent, partitions: u32) -> Option<u32> {
    if let Some(k) = &ev.key {
        return Some(for_key(k, partitions));
    }
    if ev.id.is_empty() {
        return None;
    }
    let mut identity = Vec::with_capacity(ev.source.len() + 1 + ev.id.len());
    identity.extend_from_slice(ev.source.as_bytes());
    identity.push(0);
    identity.extend_from_slice(ev.id.as_bytes());
    Some(for_key(&identity, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_reference_values() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn keys_spread_and_stay_put() {
        let mut seen = [0u32; 3];
        for i in 0..300 {
            seen[for_key(format!("k{i}").as_bytes(), 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(for_key(b"c1", 3), for_key(b"c1", 3));
    }

    #[test]
    fn keyless_events_go_by_identity() {
        let ev = |source: &str, id: &str| sluice_wire::OwnedEvent {
            source: source.into(),
            id: id.into(),
            ..Default::default()
        };
        let spread: std::collections::HashSet<u32> = (0..100)
            .filter_map(|i| for_event(&ev("/s", &format!("e{i}")), 4))
            .collect();
        assert_eq!(spread.len(), 4, "identities spread over the partitions");
        for i in 0..100 {
            let id = format!("e{i}");
            assert_eq!(for_event(&ev("/s", &id), 4), for_event(&ev("/s", &id), 4));
        }
        assert_eq!(for_event(&ev("/s", ""), 4), None);
        let mut keyed = ev("/s", "e1");
        keyed.key = Some(b"c1".to_vec());
        assert_eq!(for_event(&keyed, 4), Some(for_key(b"c1", 4)));
    }
}
