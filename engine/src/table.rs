//! A pre-sized slab of connection records with generation-tagged ids.
//!
//! Ids are `(index, generation)`: removing an entry bumps its slot's generation, so an id held by a
//! late completion (packed into `user_data`) never reaches the record that reused the slot.
//! The table is sized once at startup: `insert` never reallocates (it fails when full), so there is
//! no allocation per accept and memory grows only with the slots actually touched.

/// A generation-tagged id of a table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Id {
    /// Slot index.
    pub index: u32,
    /// Generation of the slot when the entry was inserted (28 bits are used in `user_data`).
    pub gen: u32,
}

/// Generations wrap at 28 bits so an id packs into `user_data` next to a 4-bit op code.
pub const GEN_MASK: u32 = (1 << 28) - 1;

/// The table. Generations and values live in two parallel vectors, so a slot costs
/// `4 + size_of::<Option<T>>()` bytes with no padding between the two.
pub struct Table<T> {
    gens: Vec<u32>,
    values: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
    capacity: usize,
}

impl<T> Table<T> {
    /// A table for at most `capacity` entries. Reserves the address space once; pages are touched
    /// only as slots are used.
    pub fn with_capacity(capacity: usize) -> Table<T> {
        Table {
            gens: Vec::with_capacity(capacity),
            values: Vec::with_capacity(capacity),
            free: Vec::new(),
            len: 0,
            capacity,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when no slot is free.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Inserts a value, or hands it back when the table is full.
    pub fn insert(&mut self, value: T) -> Result<Id, T> {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.values[index as usize];
            debug_assert!(slot.is_none(), "free list points at an occupied slot");
            *slot = Some(value);
            self.len += 1;
            return Ok(Id {
                index,
                gen: self.gens[index as usize],
            });
        }
        if self.values.len() >= self.capacity {
            return Err(value);
        }
        let index = self.values.len() as u32;
        self.values.push(Some(value));
        self.gens.push(0);
        self.len += 1;
        Ok(Id { index, gen: 0 })
    }

    /// The entry for `id`, if it is still the same entry.
    pub fn get(&self, id: Id) -> Option<&T> {
        if *self.gens.get(id.index as usize)? != id.gen {
            return None;
        }
        self.values[id.index as usize].as_ref()
    }

    /// The entry for `id`, mutably, if it is still the same entry.
    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        if *self.gens.get(id.index as usize)? != id.gen {
            return None;
        }
        self.values[id.index as usize].as_mut()
    }

    /// Two distinct entries at once, each if it is still the same entry (`None` for both when
    /// `a == b`'s slot).
    pub fn get2_mut(&mut self, a: Id, b: Id) -> (Option<&mut T>, Option<&mut T>) {
        if a.index == b.index {
            return (None, None);
        }
        let live = |t: &Self, id: Id| t.gens.get(id.index as usize) == Some(&id.gen);
        let (la, lb) = (live(self, a), live(self, b));
        let (lo, hi) = (a.index.min(b.index) as usize, a.index.max(b.index) as usize);
        let (left, right) = self.values.split_at_mut(hi);
        let (x, y) = (left[lo].as_mut(), right[0].as_mut());
        let (ra, rb) = if a.index < b.index { (x, y) } else { (y, x) };
        (ra.filter(|_| la), rb.filter(|_| lb))
    }

    /// Removes the entry for `id`, bumping the slot's generation.
    pub fn remove(&mut self, id: Id) -> Option<T> {
        if *self.gens.get(id.index as usize)? != id.gen {
            return None;
        }
        let value = self.values[id.index as usize].take()?;
        self.gens[id.index as usize] = (id.gen + 1) & GEN_MASK;
        if self.free.capacity() == 0 {
            self.free.reserve_exact(self.capacity);
        }
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }

    /// The id of the entry in slot `index`, if occupied.
    pub fn id_at(&self, index: u32) -> Option<Id> {
        self.values.get(index as usize)?.as_ref().map(|_| Id {
            index,
            gen: self.gens[index as usize],
        })
    }

    /// Ids of all entries (a snapshot, for shutdown sweeps).
    pub fn ids(&self) -> Vec<Id> {
        (0..self.values.len() as u32)
            .filter_map(|i| self.id_at(i))
            .collect()
    }

    /// Bytes one slot costs (for memory accounting and tests).
    pub const fn slot_size() -> usize {
        std::mem::size_of::<Option<T>>() + std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_do_not_reach_reused_slots() {
        let mut t = Table::with_capacity(2);
        let a = t.insert("a").unwrap();
        t.remove(a).unwrap();
        let b = t.insert("b").unwrap();
        assert_eq!(a.index, b.index);
        assert_ne!(a.gen, b.gen);
        assert!(t.get(a).is_none());
        assert_eq!(t.get(b), Some(&"b"));
        assert!(t.remove(a).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn two_entries_at_once() {
        let mut t = Table::with_capacity(4);
        let a = t.insert(1).unwrap();
        let b = t.insert(2).unwrap();
        let (x, y) = t.get2_mut(b, a);
        *x.unwrap() += 10;
        *y.unwrap() += 20;
        assert_eq!((t.get(a), t.get(b)), (Some(&21), Some(&12)));
        assert_eq!(t.get2_mut(a, a), (None, None));
        t.remove(b).unwrap();
        let (x, y) = t.get2_mut(a, b);
        assert_eq!((x.copied(), y.copied()), (Some(21), None));
    }

    #[test]
    fn full_table_refuses_and_recovers() {
        let mut t = Table::with_capacity(3);
        let ids: Vec<_> = (0..3).map(|i| t.insert(i).unwrap()).collect();
        assert!(t.is_full());
        assert_eq!(t.insert(9), Err(9));
        t.remove(ids[1]).unwrap();
        let id = t.insert(7).unwrap();
        assert_eq!(id.index, ids[1].index);
        assert_eq!(t.capacity(), 3);
        assert_eq!(t.ids().len(), 3);
    }

    #[test]
    fn generations_wrap_within_mask() {
        let mut t = Table::with_capacity(1);
        let mut id = t.insert(()).unwrap();
        for _ in 0..5 {
            t.remove(id).unwrap();
            id = t.insert(()).unwrap();
        }
        assert_eq!(id.gen, 5);
        assert!(id.gen <= GEN_MASK);
    }

    #[test]
    fn model_matches_a_hashmap() {
        // Deterministic pseudo-random op sequence checked against a simple model.
        let mut t = Table::with_capacity(64);
        let mut model: std::collections::HashMap<(u32, u32), u64> = Default::default();
        let mut live: Vec<Id> = Vec::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 != 0 || live.is_empty() {
                match t.insert(step) {
                    Ok(id) => {
                        assert!(model.insert((id.index, id.gen), step).is_none());
                        live.push(id);
                    }
                    Err(_) => assert_eq!(model.len(), 64),
                }
            } else {
                let id = live.swap_remove((x as usize / 3) % live.len());
                assert_eq!(t.remove(id), model.remove(&(id.index, id.gen)));
                assert!(t.get(id).is_none());
            }
            assert_eq!(t.len(), model.len());
        }
        for id in live {
            assert_eq!(t.get(id).copied(), model.get(&(id.index, id.gen)).copied());
        }
    }
}
