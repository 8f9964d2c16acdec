//! Property test: the global bitmap against the obvious computation over every
//! source, for random, hostile source bitmaps.

use proptest::prelude::*;
use ss_core::global::{GlobalBitmap, SourceId};
use ss_core::{Levels, PrioBitmap, Priority};

#[derive(Clone, Debug)]
enum Op {
    Add(u8),
    Remove(usize),
    Update(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..8).prop_map(Op::Add),
        1 => any::<usize>().prop_map(Op::Remove),
        4 => (any::<usize>(), any::<u64>()).prop_map(|(i, b)| Op::Update(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Under Miri each case takes ~10 s: 2 there (the CI's time budget).
        cases: if cfg!(miri) { 2 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn aggregate_matches_a_full_scan(ops in prop::collection::vec(op(), 0..60)) {
        let levels = Levels::DEFAULT;
        let mut g = GlobalBitmap::new(levels);
        // (id, ceiling, sanitised bits) of the live sources.
        let mut live: Vec<(SourceId, u8, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Add(ceiling) => {
                    let id = g.add_source_capped(Priority::new(ceiling).unwrap());
                    live.push((id, ceiling, 0));
                }
                Op::Remove(i) if !live.is_empty() => {
                    let (id, _, _) = live.swap_remove(i % live.len());
                    prop_assert!(g.remove_source(id));
                }
                Op::Update(i, raw) if !live.is_empty() => {
                    let i = i % live.len();
                    let allowed = levels.mask() & !((1u64 << live[i].1) - 1);
                    live[i].2 = raw & allowed;
                    prop_assert!(g.update(live[i].0, raw).is_some());
                }
                _ => {}
            }
            let global = live.iter().fold(0, |a, s| a | s.2);
            let view = g.view();
            prop_assert_eq!(view.global.bits(), global);
            prop_assert_eq!(g.len(), live.len());
            for (id, _, mine) in &live {
                let others = live.iter().filter(|s| s.0 != *id).fold(0, |a, s| a | s.2);
                prop_assert_eq!(view.elsewhere(PrioBitmap::from_bits(*mine)).bits(), others);
                for level in 0..8 {
                    let p = Priority::new(level).unwrap();
                    prop_assert_eq!(
                        view.more_important_elsewhere(PrioBitmap::from_bits(*mine), p),
                        others & p.more_important_mask() != 0
                    );
                }
            }
        }
    }
}
