//! The filters a session tracks, in filter order. A client of a fleet
//! usually has one or a few: a sorted vector sized to them, not a B-tree
//! whose first node alone takes some 400 bytes. Past `FEW` it becomes a
//! B-tree, so that thousands of filters stay O(log n) per change.

use std::collections::BTreeMap;

/// Beyond this many filters the vector gives way to a B-tree.
const FEW: usize = 16;

#[derive(Debug)]
pub(crate) enum Subscriptions<V> {
    Few(Vec<(String, V)>),
    // Boxed so the enum stays the size of a Vec (the Vec's niche holds the tag).
    #[allow(clippy::box_collection)]
    Many(Box<BTreeMap<String, V>>),
}

impl<V> Default for Subscriptions<V> {
    fn default() -> Self {
        Subscriptions::Few(Vec::new())
    }
}

impl<V> Subscriptions<V> {
    pub fn insert(&mut self, filter: String, value: V) {
        match self {
            Subscriptions::Few(few) => match few.binary_search_by(|(f, _)| f.cmp(&filter)) {
                Ok(at) => few[at].1 = value,
                Err(_) if few.len() == FEW => {
                    let mut many: BTreeMap<String, V> = std::mem::take(few).into_iter().collect();
                    many.insert(filter, value);
                    *self = Subscriptions::Many(Box::new(many));
                }
                Err(at) => {
                    // Room for exactly one more: a few filters take no spare.
                    few.reserve_exact(1);
                    few.insert(at, (filter, value));
                }
            },
            Subscriptions::Many(many) => {
                many.insert(filter, value);
            }
        }
    }

    pub fn remove(&mut self, filter: &str) {
        match self {
            Subscriptions::Few(few) => {
                if let Ok(at) = few.binary_search_by(|(f, _)| f.as_str().cmp(filter)) {
                    few.remove(at);
                    few.shrink_to_fit();
                }
            }
            Subscriptions::Many(many) => {
                many.remove(filter);
            }
        }
    }

    /// Every filter and its value, in filter order.
    pub fn iter(&self) -> Iter<'_, V> {
        match self {
            Subscriptions::Few(few) => Iter::Few(few.iter()),
            Subscriptions::Many(many) => Iter::Many(many.iter()),
        }
    }
}

pub(crate) enum Iter<'a, V> {
    Few(std::slice::Iter<'a, (String, V)>),
    Many(std::collections::btree_map::Iter<'a, String, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a String, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(few) => few.next().map(|(f, v)| (f, v)),
            Iter::Many(many) => many.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(subs: &Subscriptions<u8>) -> Vec<(String, u8)> {
        subs.iter().map(|(f, v)| (f.clone(), *v)).collect()
    }

    #[test]
    fn one_filter_takes_one_entry_of_room_and_no_tree() {
        let mut subs = Subscriptions::default();
        subs.insert("a/b".to_owned(), 1u8);
        let Subscriptions::Few(few) = &subs else {
            panic!("a B-tree for one filter");
        };
        assert_eq!(few.capacity(), 1);
        assert_eq!(
            size_of::<Subscriptions<u8>>(),
            size_of::<Vec<(String, u8)>>()
        );
    }

    #[test]
    fn order_replacement_and_removal_are_those_of_a_map_below_and_beyond_few() {
        let mut subs = Subscriptions::default();
        let mut model = BTreeMap::new();
        // A scattered order, twice over (the second pass replaces values).
        for round in 0..2u8 {
            for i in (0..3 * FEW).map(|i| (i * 7) % (3 * FEW)) {
                subs.insert(format!("t/{i:03}"), round);
                model.insert(format!("t/{i:03}"), round);
                assert_eq!(
                    filters(&subs),
                    model.clone().into_iter().collect::<Vec<_>>()
                );
            }
        }
        assert!(matches!(subs, Subscriptions::Many(_)));
        for i in 0..3 * FEW {
            subs.remove(&format!("t/{i:03}"));
            model.remove(&format!("t/{i:03}"));
            assert_eq!(
                filters(&subs),
                model.clone().into_iter().collect::<Vec<_>>()
            );
        }
        let mut few = Subscriptions::default();
        for i in 0..4 {
            few.insert(format!("f/{i}"), 0u8);
        }
        few.remove("f/1");
        few.remove("absent");
        assert_eq!(
            filters(&few)
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>(),
            ["f/0", "f/2", "f/3"]
        );
    }
}
