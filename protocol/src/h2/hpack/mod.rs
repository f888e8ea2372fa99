//! HPACK (RFC 7541): header compression for HTTP/2.
//!
//! - [`Decoder`] decodes a header block straight into a reusable [`HeaderList`] (one byte buffer
//!   and one span per field: nothing is allocated per field once the buffers have grown), keeps
//!   the peer's dynamic table, and bounds what it stores: a list beyond the caller's size limit
//!   is still decoded to keep the table in step, but its fields are dropped and it is marked
//!   [`HeaderList::oversize`] (so an HPACK bomb costs no memory).
//! - [`Encoder`] writes fields with the static table and literals (Huffman-coded where shorter),
//!   and indexes the fields a connection repeats into a dynamic table bounded by the peer's
//!   SETTINGS_HEADER_TABLE_SIZE and by our own cap.

pub mod huffman;
#[rustfmt::skip]
mod huffman_table;
pub mod integer;
pub mod table;

use table::{lookup, DynamicTable, ENTRY_OVERHEAD};

/// Why a header block did not decode (a connection error of type COMPRESSION_ERROR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ended inside a representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer exceeds the bounds HPACK needs.
    #[error("integer overflow")]
    Integer,
    /// Index 0 or beyond the tables.
    #[error("index {0} is not in the tables")]
    Index(u32),
    /// A Huffman string contains EOS or bad padding.
    #[error("invalid Huffman string")]
    Huffman,
    /// A dynamic table size update above the limit we advertised.
    #[error("table size update to {0} above the limit")]
    TableSize(u32),
    /// A dynamic table size update after the first field of a block.
    #[error("table size update after a field")]
    LateTableSize,
}

impl From<integer::IntError> for HpackError {
    fn from(e: integer::IntError) -> HpackError {
        match e {
            integer::IntError::Truncated => HpackError::Truncated,
            integer::IntError::Overflow => HpackError::Integer,
        }
    }
}

/// One decoded field: spans into [`HeaderList::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpan {
    start: u32,
    name_len: u32,
    value_len: u32,
    /// Sent as "never indexed" (RFC 7541 section 6.2.3): forward it the same way.
    pub sensitive: bool,
}

/// A decoded header list, reused from block to block.
#[derive(Debug, Default)]
pub struct HeaderList {
    bytes: Vec<u8>,
    fields: Vec<FieldSpan>,
    /// The list's size as RFC 7541 section 4.1 counts it (also past the limit).
    pub size: usize,
    /// The list exceeded the size limit: fields were decoded but not kept.
    pub oversize: bool,
}

impl HeaderList {
    /// Empties the list, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.size = 0;
        self.oversize = false;
    }

    /// Fields in the list.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the list has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The field at `i`: (name, value, sensitive).
    pub fn get(&self, i: usize) -> (&[u8], &[u8], bool) {
        let f = self.fields[i];
        let s = f.start as usize;
        let n = s + f.name_len as usize;
        (
            &self.bytes[s..n],
            &self.bytes[n..n + f.value_len as usize],
            f.sensitive,
        )
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.fields.len()).map(|i| {
            let (n, v, _) = self.get(i);
            (n, v)
        })
    }

    /// Appends a field (for building lists by hand, as tests and translators do).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.fields.push(FieldSpan {
            start,
            name_len: name.len() as u32,
            value_len: value.len() as u32,
            sensitive: false,
        });
        self.size += name.len() + value.len() + ENTRY_OVERHEAD;
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.fields.capacity() * std::mem::size_of::<FieldSpan>()
    }

    /// Returns the buffers' memory (for connections going idle).
    pub fn shrink(&mut self) {
        *self = HeaderList::default();
    }
}

/// The decoding side of one connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The largest table size the peer may choose (our SETTINGS_HEADER_TABLE_SIZE).
    max_allowed: usize,
}

impl Decoder {
    /// A decoder whose peer may use a table of up to `max_allowed` octets (4,096 is HTTP/2's
    /// initial value).
    pub fn new(max_allowed: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_allowed),
            max_allowed,
        }
    }

    /// The dynamic table (for inspection and accounting).
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Lowers or raises the limit we advertise (takes effect once the peer acknowledged it).
    pub fn set_max_allowed(&mut self, max_allowed: usize) {
        self.max_allowed = max_allowed;
        if self.table.max_size() > max_allowed {
            self.table.set_max_size(max_allowed);
        }
    }

    /// Decodes one complete header block into `out` (cleared first), keeping at most
    /// `max_list_size` octets of fields (RFC 7541 section 4.1 sizes).
    pub fn decode(
        &mut self,
        mut block: &[u8],
        out: &mut HeaderList,
        max_list_size: usize,
    ) -> Result<(), HpackError> {
        out.clear();
        let mut fields_seen = false;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // Indexed field (section 6.1).
                let (index, used) = integer::decode(block, 7)?;
                block = &block[used..];
                let (n, v) = lookup(&self.table, index as usize).ok_or(HpackError::Index(index))?;
                fields_seen = true;
                if out.oversize {
                    // Past the limit: count, do not copy (an HPACK bomb costs no memcpy).
                    out.size = out.size.saturating_add(n.len() + v.len() + ENTRY_OVERHEAD);
                    continue;
                }
                let start = out.bytes.len();
                out.bytes.extend_from_slice(n);
                out.bytes.extend_from_slice(v);
                Self::keep(out, start, n.len(), v.len(), false, max_list_size);
                continue;
            }
            if first & 0xe0 == 0x20 {
                // Dynamic table size update (section 6.3), only before the first field.
                let (size, used) = integer::decode(block, 5)?;
                block = &block[used..];
                if fields_seen {
                    return Err(HpackError::LateTableSize);
                }
                if size as usize > self.max_allowed {
                    return Err(HpackError::TableSize(size));
                }
                self.table.set_max_size(size as usize);
                continue;
            }
            // Literals (sections 6.2.1-6.2.3).
            let (prefix, index_it, sensitive) = if first & 0x40 != 0 {
                (6, true, false)
            } else {
                (4, false, first & 0x10 != 0)
            };
            let (name_index, used) = integer::decode(block, prefix)?;
            block = &block[used..];
            fields_seen = true;
            if out.oversize && !index_it {
                // Past the limit and not for the table: skip the strings without decoding.
                let name_len = if name_index == 0 {
                    let (rest, n) = skip_string(block)?;
                    block = rest;
                    n
                } else {
                    lookup(&self.table, name_index as usize)
                        .ok_or(HpackError::Index(name_index))?
                        .0
                        .len()
                };
                let (rest, value_len) = skip_string(block)?;
                block = rest;
                out.size = out
                    .size
                    .saturating_add(name_len + value_len + ENTRY_OVERHEAD);
                continue;
            }
            let start = out.bytes.len();
            if name_index == 0 {
                block = read_string(block, &mut out.bytes)?;
            } else {
                let (n, _) = lookup(&self.table, name_index as usize)
                    .ok_or(HpackError::Index(name_index))?;
                out.bytes.extend_from_slice(n);
            }
            let name_len = out.bytes.len() - start;
            block = read_string(block, &mut out.bytes)?;
            let value_len = out.bytes.len() - start - name_len;
            if index_it {
                let (n, v) = out.bytes[start..].split_at(name_len);
                self.table.insert(n, v);
            }
            Self::keep(out, start, name_len, value_len, sensitive, max_list_size);
        }
        Ok(())
    }

    /// Records the field just decoded at `start`, or drops its bytes once the list is too large.
    fn keep(
        out: &mut HeaderList,
        start: usize,
        name_len: usize,
        value_len: usize,
        sensitive: bool,
        max_list_size: usize,
    ) {
        out.size = out
            .size
            .saturating_add(name_len + value_len + ENTRY_OVERHEAD);
        if out.oversize || out.size > max_list_size {
            out.oversize = true;
            out.bytes.truncate(start);
            return;
        }
        out.fields.push(FieldSpan {
            start: start as u32,
            name_len: name_len as u32,
            value_len: value_len as u32,
            sensitive,
        });
    }
}

/// Reads a string literal (section 5.2), appending its decoded bytes to `out`.
fn read_string<'a>(block: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], HpackError> {
    let first = *block.first().ok_or(HpackError::Truncated)?;
    let (len, used) = integer::decode(block, 7)?;
    let rest = &block[used..];
    let len = len as usize;
    if rest.len() < len {
        return Err(HpackError::Truncated);
    }
    let (s, rest) = rest.split_at(len);
    if first & 0x80 != 0 {
        huffman::decode(s, out, usize::MAX).map_err(|_| HpackError::Huffman)?;
    } else {
        out.extend_from_slice(s);
    }
    Ok(rest)
}

/// Skips a string literal: the rest of the block and the literal's length on the wire.
fn skip_string(block: &[u8]) -> Result<(&[u8], usize), HpackError> {
    let (len, used) = integer::decode(block, 7)?;
    let rest = &block[used..];
    let len = len as usize;
    if rest.len() < len {
        return Err(HpackError::Truncated);
    }
    Ok((&rest[len..], len))
}

/// Appends a string literal, Huffman-coded when that is shorter.
pub fn write_string(s: &[u8], out: &mut Vec<u8>) {
    let coded = huffman::encoded_len(s);
    if coded < s.len() {
        integer::encode(coded as u32, 7, 0x80, out);
        huffman::encode(s, out);
    } else {
        integer::encode(s.len() as u32, 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// How a field may be stored by the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    /// Index it if it fits (fields that repeat: content-type, server, cache-control).
    Index,
    /// Send it as a literal without indexing (fields that change: date, content-length).
    Literal,
    /// Never indexed, here or by intermediaries (authorization, cookies with secrets).
    Never,
}

/// The encoding side of one connection.
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// Our own cap on the table (memory per connection), below the peer's limit.
    cap: usize,
    /// A size update owed at the start of the next block.
    pending_update: Option<usize>,
}

impl Encoder {
    /// An encoder whose dynamic table holds at most `cap` octets (0: static table and literals
    /// only). The peer's initial limit is 4,096.
    pub fn new(cap: usize) -> Encoder {
        let size = cap.min(4096);
        Encoder {
            table: DynamicTable::new(size),
            cap,
            pending_update: (size != 4096).then_some(size),
        }
    }

    /// The dynamic table (for inspection and accounting).
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed.
    pub fn set_peer_limit(&mut self, limit: usize) {
        let size = self.cap.min(limit);
        if size != self.table.max_size() {
            self.table.set_max_size(size);
            // The smallest size since the last block is signalled, then the final one (RFC 7541
            // section 4.2).
            self.pending_update = Some(self.pending_update.map_or(size, |p| p.min(size)));
        }
    }

    /// Starts a header block: writes any table size update owed.
    pub fn begin_block(&mut self, out: &mut Vec<u8>) {
        if let Some(min) = self.pending_update.take() {
            integer::encode(min as u32, 5, 0x20, out);
            let now = self.table.max_size();
            if now != min {
                integer::encode(now as u32, 5, 0x20, out);
            }
        }
    }

    /// Appends one field.
    pub fn encode(&mut self, name: &[u8], value: &[u8], how: Indexing, out: &mut Vec<u8>) {
        let stat = table::find_static(name, value);
        if let Some((i, true)) = stat {
            integer::encode(i as u32, 7, 0x80, out);
            return;
        }
        let dynamic = if how == Indexing::Never {
            None
        } else {
            self.table.find(name, value)
        };
        if let Some((i, true)) = dynamic {
            integer::encode((i + 62) as u32, 7, 0x80, out);
            return;
        }
        let name_index = match (stat, dynamic) {
            (Some((i, _)), _) => i,
            (None, Some((i, _))) => i + 62,
            (None, None) => 0,
        };
        let index_it = how == Indexing::Index
            && name.len() + value.len() + ENTRY_OVERHEAD <= self.table.max_size();
        let (prefix, flags) = match how {
            _ if index_it => (6, 0x40),
            Indexing::Never => (4, 0x10),
            _ => (4, 0x00),
        };
        integer::encode(name_index as u32, prefix, flags, out);
        if name_index == 0 {
            write_string(name, out);
        }
        write_string(value, out);
        if index_it {
            self.table.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests;
