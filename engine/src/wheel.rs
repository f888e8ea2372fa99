//! A hierarchical timer wheel: 6 levels of 64 slots, 1 ms ticks, O(1) insert and cancel.
//!
//! Level `n` has slots of `64^n` ms; level 0 covers the next 64 ms, level 5 about 795 days (longer
//! deadlines are clamped). Entries live in one pre-sized vector and are linked into their slot's list
//! by index (no pointers, no allocation once sized). `occupied` bitmaps make finding the next
//! expiration a few bit operations per level, so the ring's wait can be bounded by it.
//!
//! Most timers (request, keep-alive, server, connect) are cancelled before they fire: cancelling is an
//! unlink, and nothing is sorted until a slot actually expires (entries of a higher level cascade
//! down only when their slot comes due).
//!
//! # Fired keys stay reserved for the batch
//! [`Wheel::poll`] hands out every due timer as `(token, key)`. Those entries are *not* freed
//! then: they stay reserved (neither scheduled nor reusable) until the next `poll`, so while the
//! caller runs the batch's handlers, a handler that inserts a timer always gets a key no holder of
//! a fired key still has, and cancelling a fired key (say, closing a connection whose timer is
//! later in the batch) is a no-op that cannot hit someone else's new timer. A caller checks that a
//! fired key is still the one its record holds before acting on the token, so a token whose slot
//! was reused within the batch (its record holds another key, or none) is ignored. Together these
//! do what generations would, without widening the 4-byte key.

const LEVELS: usize = 6;
const SLOTS: usize = 64;
const MAX_DELAY: u64 = (1 << (6 * LEVELS)) - 1;
const NONE: u32 = u32::MAX;
/// `Entry::slot` of an entry on the free list.
const FREE: u16 = u16::MAX;
/// `Entry::slot` of an entry handed out by the last `poll` and not yet freed.
const FIRED: u16 = u16::MAX - 1;

/// A handle to a scheduled timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey(u32);

impl TimerKey {
    /// The "no timer" value, for records that store a key inline.
    pub const NONE: TimerKey = TimerKey(NONE);

    /// True unless this is [`TimerKey::NONE`].
    pub fn is_some(self) -> bool {
        self.0 != NONE
    }
}

#[derive(Clone, Copy)]
struct Entry {
    deadline: u64,
    token: u32,
    prev: u32,
    next: u32,
    slot: u16,
}

/// A timer handed out by [`Wheel::poll`]: the token it was inserted with and its key, which its
/// holder compares with the key it stored before acting on the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fired {
    /// The token given to [`Wheel::insert`].
    pub token: u32,
    /// The key [`Wheel::insert`] returned.
    pub key: TimerKey,
}

/// The wheel. Time is in milliseconds since an epoch the owner chooses.
pub struct Wheel {
    entries: Vec<Entry>,
    free: u32,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    elapsed: u64,
    len: usize,
    /// Keys handed out by the last poll, freed at the next one.
    reserved: Vec<u32>,
}

impl Wheel {
    /// A wheel whose entry table is pre-sized for `capacity` concurrent timers (it grows beyond if
    /// needed).
    pub fn with_capacity(capacity: usize) -> Wheel {
        Wheel {
            entries: Vec::with_capacity(capacity),
            free: NONE,
            heads: [[NONE; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            elapsed: 0,
            len: 0,
            reserved: Vec::new(),
        }
    }

    /// Number of scheduled timers (fired ones not included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The time the wheel has been advanced to.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Schedules `token` to fire at `deadline` (ms). A deadline not after the wheel's time fires at
    /// the next poll that advances time.
    pub fn insert(&mut self, deadline: u64, token: u32) -> TimerKey {
        let deadline = deadline.clamp(self.elapsed + 1, self.elapsed + MAX_DELAY);
        let entry = Entry {
            deadline,
            token,
            prev: NONE,
            next: NONE,
            slot: FREE,
        };
        let key = if self.free != NONE {
            let k = self.free;
            self.free = self.entries[k as usize].next;
            self.entries[k as usize] = entry;
            k
        } else {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        };
        self.link(key);
        self.len += 1;
        TimerKey(key)
    }

    /// Cancels a timer. Cancelling a key that fired in the last poll is a no-op (the key stays
    /// reserved until the next poll); cancelling one that was already freed is a bug in the caller,
    /// ignored when detectable.
    pub fn cancel(&mut self, key: TimerKey) {
        let k = key.0;
        if k == NONE
            || self
                .entries
                .get(k as usize)
                .is_none_or(|e| e.slot == FREE || e.slot == FIRED)
        {
            return;
        }
        self.unlink(k);
        self.len -= 1;
        self.release(k);
    }

    /// The deadline (ms) of the earliest slot holding timers, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.next_expiration().map(|(_, _, d)| d)
    }

    /// Frees the keys handed out by the previous poll, advances the wheel to `now` and appends
    /// every timer due by then to `fired` (their keys stay reserved until the next poll).
    pub fn poll(&mut self, now: u64, fired: &mut Vec<Fired>) {
        let mut reserved = std::mem::take(&mut self.reserved);
        for k in reserved.drain(..) {
            self.release(k);
        }
        self.reserved = reserved;
        while let Some((level, slot, deadline)) = self.next_expiration() {
            if deadline > now {
                break;
            }
            self.elapsed = self.elapsed.max(deadline);
            let mut k = self.heads[level][slot];
            self.heads[level][slot] = NONE;
            self.occupied[level] &= !(1u64 << slot);
            while k != NONE {
                let next = self.entries[k as usize].next;
                let e = &mut self.entries[k as usize];
                e.prev = NONE;
                e.next = NONE;
                e.slot = FREE;
                if e.deadline <= self.elapsed {
                    e.slot = FIRED;
                    fired.push(Fired {
                        token: e.token,
                        key: TimerKey(k),
                    });
                    self.reserved.push(k);
                    self.len -= 1;
                } else {
                    self.link(k);
                }
                k = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// Puts entry `k` on the free list.
    fn release(&mut self, k: u32) {
        let e = &mut self.entries[k as usize];
        e.slot = FREE;
        e.next = self.free;
        self.free = k;
    }

    fn link(&mut self, k: u32) {
        let deadline = self.entries[k as usize].deadline;
        let level = level_for(self.elapsed, deadline);
        let slot = ((deadline >> (6 * level)) % SLOTS as u64) as usize;
        let head = self.heads[level][slot];
        {
            let e = &mut self.entries[k as usize];
            e.prev = NONE;
            e.next = head;
            e.slot = (level * SLOTS + slot) as u16;
        }
        if head != NONE {
            self.entries[head as usize].prev = k;
        }
        self.heads[level][slot] = k;
        self.occupied[level] |= 1u64 << slot;
    }

    fn unlink(&mut self, k: u32) {
        let Entry {
            prev, next, slot, ..
        } = self.entries[k as usize];
        let (level, idx) = (slot as usize / SLOTS, slot as usize % SLOTS);
        if prev != NONE {
            self.entries[prev as usize].next = next;
        } else {
            self.heads[level][idx] = next;
            if next == NONE {
                self.occupied[level] &= !(1u64 << idx);
            }
        }
        if next != NONE {
            self.entries[next as usize].prev = prev;
        }
    }

    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let slot_range = 1u64 << (6 * level);
            let level_range = slot_range << 6;
            let now_slot = (self.elapsed / slot_range) % SLOTS as u64;
            let rotated = occupied.rotate_right(now_slot as u32);
            let slot = ((rotated.trailing_zeros() as u64 + now_slot) % SLOTS as u64) as usize;
            let level_start = self.elapsed & !(level_range - 1);
            let mut deadline = level_start + slot as u64 * slot_range;
            if deadline <= self.elapsed && level > 0 {
                // Only the top level wraps: its slots act as a ring past the end of the hierarchy.
                deadline += level_range;
            }
            return Some((level, slot, deadline));
        }
        None
    }
}

fn level_for(elapsed: u64, when: u64) -> usize {
    let mut masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    if masked >= MAX_DELAY {
        masked = MAX_DELAY - 1;
    }
    let significant = 63 - masked.leading_zeros() as usize;
    (significant / 6).min(LEVELS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut Wheel, now: u64) -> Vec<u32> {
        let mut v = Vec::new();
        w.poll(now, &mut v);
        let mut v: Vec<u32> = v.into_iter().map(|f| f.token).collect();
        v.sort();
        v
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = Wheel::with_capacity(8);
        w.insert(10, 1);
        w.insert(100, 2);
        w.insert(5_000, 3);
        w.insert(400_000, 4);
        assert_eq!(w.next_deadline(), Some(10));
        assert!(drain(&mut w, 9).is_empty());
        assert_eq!(drain(&mut w, 10), vec![1]);
        assert!(drain(&mut w, 99).is_empty());
        assert_eq!(drain(&mut w, 100), vec![2]);
        assert!(drain(&mut w, 4_999).is_empty());
        assert_eq!(drain(&mut w, 5_000), vec![3]);
        assert_eq!(drain(&mut w, 1_000_000), vec![4]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_unlinks_and_reuses_entries() {
        let mut w = Wheel::with_capacity(4);
        let a = w.insert(50, 1);
        let b = w.insert(50, 2);
        let c = w.insert(50, 3);
        w.cancel(b);
        w.cancel(b); // double cancel is ignored
        assert_eq!(w.len(), 2);
        let d = w.insert(70, 4);
        assert_eq!(d, b, "freed entry is reused");
        w.cancel(a);
        assert_eq!(drain(&mut w, 60), vec![3]);
        w.cancel(c); // fired in the last poll: ignored
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, 70), vec![4]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_deadlines_fire_on_next_tick() {
        let mut w = Wheel::with_capacity(4);
        drain(&mut w, 1_000);
        w.insert(3, 7);
        assert_eq!(drain(&mut w, 1_000), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 1_001), vec![7]);
    }

    #[test]
    fn matches_a_sorted_model_under_random_ops() {
        let mut w = Wheel::with_capacity(64);
        let mut model: std::collections::BTreeMap<u32, u64> = Default::default();
        let mut keys: std::collections::HashMap<u32, TimerKey> = Default::default();
        let mut now = 0u64;
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut next_token = 0u32;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 4 {
                0 | 1 => {
                    let delay = match (x >> 8) % 4 {
                        0 => (x >> 16) % 64,
                        1 => (x >> 16) % 5_000,
                        2 => (x >> 16) % 300_000,
                        _ => (x >> 16) % 50_000_000,
                    };
                    let deadline = now + delay;
                    let token = next_token;
                    next_token += 1;
                    keys.insert(token, w.insert(deadline, token));
                    model.insert(token, deadline.max(now + 1));
                }
                2 => {
                    if let Some((&t, _)) =
                        model.iter().nth(((x >> 8) as usize) % model.len().max(1))
                    {
                        w.cancel(keys.remove(&t).unwrap());
                        model.remove(&t);
                    }
                }
                _ => {
                    now += (x >> 8) % 700;
                    let mut fired = Vec::new();
                    w.poll(now, &mut fired);
                    for f in &fired {
                        assert_eq!(Some(&f.key), keys.get(&f.token), "fired with its own key");
                    }
                    let mut fired: Vec<u32> = fired.into_iter().map(|f| f.token).collect();
                    fired.sort();
                    let mut due: Vec<u32> = model
                        .iter()
                        .filter(|(_, &d)| d <= now)
                        .map(|(&t, _)| t)
                        .collect();
                    due.sort();
                    assert_eq!(fired, due, "at {now}");
                    for t in due {
                        model.remove(&t);
                        keys.remove(&t);
                    }
                }
            }
            assert_eq!(w.len(), model.len());
            if let (Some(next), Some(min)) = (w.next_deadline(), model.values().min()) {
                assert!(
                    next <= *min,
                    "wheel wakes no later than the earliest deadline"
                );
            }
        }
    }

    #[test]
    fn keys_fired_in_one_poll_stay_reserved_for_the_batch() {
        // Two timers fire in one poll; a handler inserts a new one; then each fired key is
        // cancelled (a later connection in the batch closing, say): only the new timer remains.
        let mut w = Wheel::with_capacity(4);
        let a = w.insert(10, 1);
        let b = w.insert(10, 2);
        let mut fired = Vec::new();
        w.poll(10, &mut fired);
        assert_eq!(fired.len(), 2);
        assert!(fired.contains(&Fired { token: 1, key: a }));
        assert!(fired.contains(&Fired { token: 2, key: b }));
        assert!(w.is_empty());
        let new = w.insert(50, 3);
        assert!(
            new != a && new != b,
            "a fired key was handed out within its batch"
        );
        w.cancel(a);
        w.cancel(b);
        assert_eq!(w.len(), 1, "cancelling a fired key cancelled another timer");
        assert_eq!(drain(&mut w, 49), Vec::<u32>::new());
        // The next poll freed them: they are reused now, and fire normally.
        let again = w.insert(60, 4);
        assert!(
            again == a || again == b,
            "reserved keys were not freed by the next poll"
        );
        assert_eq!(drain(&mut w, 60), vec![3, 4]);
        assert!(w.is_empty());
    }

    #[test]
    fn entry_is_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }
}
