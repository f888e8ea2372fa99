//! The HPACK tables (RFC 7541 section 2.3): the static table of Appendix A and the dynamic
//! table, a FIFO of fields bounded by a size in octets (each entry counts its name, its value
//! and 32).
//!
//! The dynamic table keeps its entries' bytes in one buffer (newest at the end, evicted from the
//! front, compacted when the end is reached), so inserting allocates only while the table grows
//! towards its bound and lookups return slices.

use std::collections::VecDeque;

/// RFC 7541 Appendix A.
pub const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Octets an entry counts for beyond its name and value (RFC 7541 section 4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// The dynamic table of one direction of one connection.
#[derive(Debug, Default)]
pub struct DynamicTable {
    /// Entry bytes: name then value, oldest first, starting at `entries[0].start - base`.
    bytes: Vec<u8>,
    /// (start in absolute bytes, name length, value length), oldest first.
    entries: VecDeque<(usize, u32, u32)>,
    /// The absolute offset of `bytes[0]`.
    base: usize,
    /// Sum of entry sizes (RFC 7541 section 4.1).
    size: usize,
    /// The current maximum size (set by a size update).
    max_size: usize,
}

impl DynamicTable {
    /// An empty table with the given maximum size.
    pub fn new(max_size: usize) -> DynamicTable {
        DynamicTable {
            max_size,
            ..DynamicTable::default()
        }
    }

    /// The table's size in octets, as RFC 7541 counts it.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The table's current maximum size.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes the table holds (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.entries.capacity() * std::mem::size_of::<(usize, u32, u32)>()
    }

    /// Changes the maximum size, evicting entries to fit.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
        if self.entries.is_empty() {
            // Return the memory of a table that was emptied (a peer that set size 0).
            self.bytes = Vec::new();
            self.entries = VecDeque::new();
            self.base = 0;
        }
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let Some((_, n, v)) = self.entries.pop_front() else {
                break;
            };
            self.size -= n as usize + v as usize + ENTRY_OVERHEAD;
        }
        if self.entries.is_empty() {
            self.bytes.clear();
            self.base = 0;
            self.size = 0;
        }
    }

    /// Inserts a field (RFC 7541 section 4.4): evicts until it fits; a field larger than the
    /// maximum size empties the table and is not inserted.
    pub fn insert(&mut self, name: &[u8], value: &[u8]) {
        let need = name.len() + value.len() + ENTRY_OVERHEAD;
        if need > self.max_size {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - need);
        // Drop evicted bytes at the front once they are the larger part of the buffer.
        let live_start = self
            .entries
            .front()
            .map_or(self.base + self.bytes.len(), |e| e.0);
        let dead = live_start - self.base;
        if dead > 0
            && (dead >= self.bytes.len() / 2
                || self.bytes.len() + name.len() + value.len() > self.max_size)
        {
            self.bytes.drain(..dead);
            self.base = live_start;
        }
        let start = self.base + self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.entries
            .push_back((start, name.len() as u32, value.len() as u32));
        self.size += need;
    }

    /// The entry with dynamic index `i` (0 = the newest).
    pub fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let idx = self.entries.len().checked_sub(i + 1)?;
        let (start, n, v) = self.entries[idx];
        let at = start - self.base;
        let (n, v) = (n as usize, v as usize);
        Some((&self.bytes[at..at + n], &self.bytes[at + n..at + n + v]))
    }

    /// The dynamic index (0 = newest) of an entry with this name and value, or else of one with
    /// this name only (`(index, value matched)`).
    pub fn find(&self, name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
        let mut by_name = None;
        for i in 0..self.entries.len() {
            let (n, v) = self.get(i).expect("in range");
            if n == name {
                if v == value {
                    return Some((i, true));
                }
                by_name.get_or_insert((i, false));
            }
        }
        by_name
    }
}

/// Looks up an HPACK index (1-based: the static table, then the dynamic table).
pub fn lookup(dynamic: &DynamicTable, index: usize) -> Option<(&[u8], &[u8])> {
    match index {
        0 => None,
        1..=61 => Some(STATIC[index - 1]),
        _ => dynamic.get(index - 62),
    }
}

/// The static index of a name and value, or else of the name (`(index, value matched)`).
pub fn find_static(name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
    let mut by_name = None;
    for (i, (n, v)) in STATIC.iter().enumerate() {
        if *n == name {
            if *v == value {
                return Some((i + 1, true));
            }
            by_name.get_or_insert((i + 1, false));
        }
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_spot_checks() {
        assert_eq!(STATIC[0], (&b":authority"[..], &b""[..]));
        assert_eq!(STATIC[7], (&b":status"[..], &b"200"[..]));
        assert_eq!(STATIC[60], (&b"www-authenticate"[..], &b""[..]));
        assert_eq!(find_static(b":method", b"POST"), Some((3, true)));
        assert_eq!(find_static(b":status", b"418"), Some((8, false)));
        assert_eq!(find_static(b"x-nope", b""), None);
    }

    #[test]
    fn insert_evict_and_bound() {
        let mut t = DynamicTable::new(100);
        t.insert(b"a", b"1"); // 34
        t.insert(b"b", b"2"); // 68
        assert_eq!((t.len(), t.size()), (2, 68));
        assert_eq!(t.get(0), Some((&b"b"[..], &b"2"[..])));
        assert_eq!(lookup(&t, 63), Some((&b"a"[..], &b"1"[..])));
        t.insert(b"c", b"3"); // evicts a
        assert_eq!((t.len(), t.size()), (2, 68));
        assert_eq!(t.get(1), Some((&b"b"[..], &b"2"[..])));
        assert_eq!(t.find(b"c", b"3"), Some((0, true)));
        assert_eq!(t.find(b"b", b"x"), Some((1, false)));
        // Larger than the table: empties it.
        t.insert(&[b'x'; 80], b"");
        assert_eq!((t.len(), t.size()), (0, 0));
        // Shrinking evicts.
        t.insert(b"a", b"1");
        t.insert(b"b", b"2");
        t.set_max_size(40);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(0), Some((&b"b"[..], &b"2"[..])));
        t.set_max_size(0);
        assert!(t.is_empty());
        assert_eq!(t.heap_bytes(), 0);
    }

    #[test]
    fn many_inserts_keep_the_buffer_bounded() {
        let mut t = DynamicTable::new(4096);
        for i in 0..10_000u32 {
            let v = format!("value-{i}-{}", "x".repeat((i % 97) as usize));
            t.insert(b"name", v.as_bytes());
            assert_eq!(t.get(0).unwrap().1, v.as_bytes());
            assert!(t.size() <= 4096);
        }
        assert!(t.bytes.capacity() <= 2 * 4096, "{}", t.bytes.capacity());
    }
}
