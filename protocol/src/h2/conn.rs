//! One HTTP/2 connection, either side (RFC 9113 sections 3-6): the preface, SETTINGS, stream
//! states, flow control, header blocks across CONTINUATION, PING, GOAWAY, RST_STREAM, and the
//! flood limits. No I/O and no clock: the caller passes received bytes and the time, and gets
//! frames appended to its output buffer and one [`Event`] at a time.
//!
//! The typical server loop:
//! ```ignore
//! conn.start(out);                       // our SETTINGS
//! let mut at = 0;
//! loop {
//!     let (used, ev) = conn.recv(&input[at..], now_ms, out)?;   // Err: GOAWAY written, close
//!     let base = at;
//!     at += used;
//!     match ev {
//!         None => break,                                         // wait for more input
//!         Some(Event::Headers { stream, end_stream }) => { /* conn.head(), conn.checked() */ }
//!         Some(Event::Data { stream, start, len, .. }) => {
//!             let bytes = &input[base + start..base + start + len];
//!             // forward, then conn.consumed(stream, len, out) to reopen the windows
//!         }
//!         Some(_) => {}
//!     }
//! }
//! ```
//!
//! Limits answered with the RFC's errors, all with bounded memory: concurrent streams (RST
//! REFUSED_STREAM), header list size ([`Event::TooLarge`]: the caller answers 431; the block is
//! still decoded to keep HPACK in step but its fields are not kept), header block bytes and
//! CONTINUATION frames per block (GOAWAY ENHANCE_YOUR_CALM), streams reset by the peer per
//! second (rapid reset, CVE-2023-44487), and "glitches" per second: frames that cost us work
//! without carrying a request (PING, SETTINGS, empty DATA or fragments, WINDOW_UPDATE noise,
//! refused and malformed streams, WINDOW_UPDATEs of under 1 KiB), which covers the PING/SETTINGS/WINDOW_UPDATE and
//! empty-frame floods.

use super::error::{ErrorCode, H2Error};
use super::frame::{self, flag, kind, setting, Frame, FrameHeader, HEADER_LEN, MAX_WINDOW};
use super::hpack::{Decoder, Encoder, HeaderList, Indexing};
use super::message::{self, Checked};
use super::stream::{Stream, StreamState};

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: the peer opens odd streams.
    Server,
    /// We opened the connection: we open odd streams.
    Client,
}

/// Flood limits (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub struct FloodLimits {
    /// CONTINUATION frames in one header block.
    pub max_continuations: u32,
    /// Bytes of one (compressed) header block.
    pub max_block_bytes: u32,
    /// Glitches allowed at once, and refilled per second.
    pub glitch_burst: u32,
    pub glitches_per_sec: u32,
    /// Streams the peer may reset at once, and per second.
    pub reset_burst: u32,
    pub resets_per_sec: u32,
}

/// Which flood limit ended a connection with GOAWAY(ENHANCE_YOUR_CALM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// More CONTINUATION frames in one header block than `max_continuations`.
    Continuations,
    /// A header block longer than `max_block_bytes`.
    HeaderBlock,
    /// Frames that cost without doing work (empty DATA and CONTINUATION, SETTINGS and PING
    /// floods, tiny WINDOW_UPDATEs, streams we had to reset) beyond the glitch budget.
    Glitches,
    /// Streams reset by the peer beyond the reset budget (rapid reset, CVE-2023-44487).
    Resets,
}

impl Flood {
    /// Every limit, in `slot` order.
    pub const ALL: [Flood; 4] = [
        Flood::Continuations,
        Flood::HeaderBlock,
        Flood::Glitches,
        Flood::Resets,
    ];

    /// An index into arrays of `ALL.len()` counters.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Flood::Continuations => "continuations",
            Flood::HeaderBlock => "header_block",
            Flood::Glitches => "glitches",
            Flood::Resets => "resets",
        }
    }
}

/// What we advertise and enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub struct Settings {
    pub max_concurrent_streams: u32,
    /// Each stream's receive window.
    pub initial_window_size: u32,
    /// The connection's receive window (raised from 65,535 with a WINDOW_UPDATE at start).
    pub connection_window: u32,
    pub max_frame_size: u32,
    /// The HPACK table the peer may use for what it sends us.
    pub header_table_size: u32,
    pub max_header_list_size: u32,
    /// The HPACK table we use for what we send (our memory; below the peer's limit).
    pub encoder_table_size: u32,
    /// RFC 8441 extended CONNECT (WebSocket over HTTP/2).
    pub enable_connect_protocol: bool,
    pub limits: FloodLimits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            connection_window: 1 << 20,
            max_frame_size: frame::MIN_MAX_FRAME_SIZE,
            header_table_size: 4096,
            max_header_list_size: 16 << 10,
            encoder_table_size: 4096,
            enable_connect_protocol: false,
            limits: FloodLimits {
                max_continuations: 32,
                max_block_bytes: 64 << 10,
                glitch_burst: 1000,
                glitches_per_sec: 500,
                reset_burst: 200,
                resets_per_sec: 100,
            },
        }
    }
}

/// The peer's settings as they stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub struct PeerSettings {
    pub header_table_size: u32,
    pub enable_push: bool,
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
    pub enable_connect_protocol: bool,
}

impl Default for PeerSettings {
    fn default() -> PeerSettings {
        // RFC 9113 section 6.5.2 initial values (unlimited streams until SETTINGS say).
        PeerSettings {
            header_table_size: 4096,
            enable_push: true,
            max_concurrent_streams: u32::MAX,
            initial_window_size: 65_535,
            max_frame_size: frame::MIN_MAX_FRAME_SIZE,
            max_header_list_size: u32::MAX,
            enable_connect_protocol: false,
        }
    }
}

/// What the caller must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub enum Event {
    /// A request head (server) or a response head, 1xx included (client) arrived on `stream`:
    /// [`Connection::head`] and [`Connection::checked`] hold it until the next call.
    Headers { stream: u32, end_stream: bool },
    /// Trailers arrived (they end the stream): [`Connection::head`] holds them.
    Trailers { stream: u32 },
    /// Body bytes at `input[start..start + len]` of the slice passed to this call. Call
    /// [`Connection::consumed`] once they are passed on, to reopen the windows.
    Data {
        stream: u32,
        start: usize,
        len: usize,
        end_stream: bool,
    },
    /// A request head exceeds max_header_list_size: answer 431 on `stream`.
    TooLarge { stream: u32 },
    /// The stream is gone: reset by the peer (`remote`), or by us for a stream error (our
    /// RST_STREAM is already written; this also reports streams the caller never heard of,
    /// refused or malformed ones: ignore those).
    Reset {
        stream: u32,
        code: ErrorCode,
        remote: bool,
    },
    /// Send windows grew: streams waiting to send may go on.
    Writable,
    /// The peer's SETTINGS arrived or changed (the stream capacity may have changed).
    Settings,
    /// The peer sent GOAWAY: no new streams; streams above `last_stream` were not processed
    /// (each also gets a [`Event::Reset`] with REFUSED_STREAM on the client side).
    GoAway { last_stream: u32, code: ErrorCode },
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Server: the client preface is expected.
    Preface,
    /// The peer's first frame (SETTINGS) is expected.
    FirstSettings,
    Open,
    /// A connection error was answered: nothing more is read.
    Closed,
}

/// A header block spanning CONTINUATION frames.
#[derive(Clone, Copy, Debug)]
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    frames: u32,
    self_dependent: bool,
}

/// A token bucket, refilled per second (time passed in).
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    used: u32,
    at_ms: u64,
}

impl Bucket {
    fn take(&mut self, now_ms: u64, burst: u32, per_sec: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let refill =
            (elapsed.saturating_mul(u64::from(per_sec)) / 1000).min(u64::from(u32::MAX)) as u32;
        if refill > 0 {
            self.used = self.used.saturating_sub(refill);
            self.at_ms = now_ms;
        }
        if self.used >= burst {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The graceful GOAWAY sequence (section 6.8): announce, PING, then the real last stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    Running,
    /// GOAWAY(2^31-1) and a PING are out; the final GOAWAY follows the PING's ack.
    Announced,
    /// The final GOAWAY is out: streams above `last` are ignored.
    Final {
        last: u32,
    },
}

/// The PING payload of the graceful shutdown.
const SHUTDOWN_PING: [u8; 8] = *b"goaway!\0";
/// WINDOW_UPDATE increments below this count as glitches.
const SMALL_WINDOW_UPDATE: u32 = 1024;
/// How a stream that is not active ended, as far as the connection remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Its id was skipped: it never opened (below the highest id, so implicitly closed).
    NeverOpened,
    /// It ended normally (END_STREAM both ways, or reset by the peer).
    Normal,
    /// We reset it (or ignored it after the final GOAWAY): the peer's late frames are expected.
    ResetByUs,
    /// Too far below the highest id to be remembered: late frames are given the benefit of
    /// the doubt and ignored.
    Forgotten,
}

/// One HTTP/2 connection.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    local: Settings,
    peer: PeerSettings,
    phase: Phase,
    /// Our SETTINGS are acknowledged (the values are in force).
    acked: bool,
    decoder: Decoder,
    encoder: Encoder,
    head: HeaderList,
    checked: Checked,
    block: Vec<u8>,
    pending: Option<PendingBlock>,
    streams: Vec<Stream>,
    /// The 128 stream ids of the initiator's parity at and below the highest one opened
    /// (`window_top`): bit `i` is the id `top - 2i`. `opened`: the stream existed; `reset`: we
    /// reset it (or ignored it).
    opened: u128,
    reset: u128,
    send_window: i64,
    recv_window: i64,
    conn_unacked: u32,
    /// The highest stream id the peer opened.
    last_peer_stream: u32,
    /// Our next stream id (client role).
    next_stream: u32,
    shutdown: Shutdown,
    goaway_received: Option<u32>,
    glitches: Bucket,
    resets: Bucket,
    /// The flood limit that ended the connection, if one did.
    flood: Option<Flood>,
}

type Step = Result<Option<Event>, H2Error>;

impl Connection {
    /// A connection with our settings `local`.
    pub fn new(role: Role, local: Settings) -> Connection {
        Connection {
            role,
            local,
            peer: PeerSettings::default(),
            phase: match role {
                Role::Server => Phase::Preface,
                Role::Client => Phase::FirstSettings,
            },
            acked: false,
            decoder: Decoder::new(local.header_table_size.max(4096) as usize),
            encoder: Encoder::new(local.encoder_table_size as usize),
            head: HeaderList::default(),
            checked: Checked::default(),
            block: Vec::new(),
            pending: None,
            streams: Vec::new(),
            opened: 0,
            reset: 0,
            send_window: 65_535,
            recv_window: 65_535,
            conn_unacked: 0,
            last_peer_stream: 0,
            next_stream: 1,
            shutdown: Shutdown::Running,
            goaway_received: None,
            glitches: Bucket::default(),
            resets: Bucket::default(),
            flood: None,
        }
    }

    /// Writes what we send first: the client preface (client), our SETTINGS, and the WINDOW_UPDATE
    /// that raises the connection window.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if self.role == Role::Client {
            out.extend_from_slice(frame::PREFACE);
        }
        let l = &self.local;
        let mut values = [(0u16, 0u32); 7];
        let mut n = 0;
        let mut put = |id, v| {
            values[n] = (id, v);
            n += 1;
        };
        if l.header_table_size != 4096 {
            put(setting::HEADER_TABLE_SIZE, l.header_table_size);
        }
        if self.role == Role::Client {
            put(setting::ENABLE_PUSH, 0);
        }
        put(setting::MAX_CONCURRENT_STREAMS, l.max_concurrent_streams);
        if l.initial_window_size != 65_535 {
            put(setting::INITIAL_WINDOW_SIZE, l.initial_window_size);
        }
        if l.max_frame_size != frame::MIN_MAX_FRAME_SIZE {
            put(setting::MAX_FRAME_SIZE, l.max_frame_size);
        }
        put(setting::MAX_HEADER_LIST_SIZE, l.max_header_list_size);
        if l.enable_connect_protocol && self.role == Role::Server {
            put(setting::ENABLE_CONNECT_PROTOCOL, 1);
        }
        frame::write_settings(out, &values[..n]);
        if l.connection_window > 65_535 {
            let extra = l.connection_window.min(MAX_WINDOW) - 65_535;
            frame::write_window_update(out, 0, extra);
            self.recv_window += i64::from(extra);
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's settings.
    pub fn peer_settings(&self) -> &PeerSettings {
        &self.peer
    }

    /// The head delivered by the last [`Event::Headers`], [`Event::Trailers`].
    pub fn head(&self) -> &HeaderList {
        &self.head
    }

    /// The checked pseudo-header fields of the last head.
    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    /// Active streams.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// The state of a stream (idle or closed ones have no record).
    pub fn stream_state(&self, id: u32) -> StreamState {
        match self.find(id) {
            Some(i) => self.streams[i].state,
            None if self.is_idle_id(id) => StreamState::Idle,
            None => StreamState::Closed,
        }
    }

    /// Whether the peer's SETTINGS have arrived (a backend connection has no capacity before).
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether the connection accepts no more streams and has none left: time to close. A
    /// client's GOAWAY does not end a server's connection by itself (the client may still send
    /// PINGs, and closes when it is done); a server's GOAWAY ends a client's.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Closed
            || (self.streams.is_empty()
                && (matches!(self.shutdown, Shutdown::Final { .. })
                    || (self.goaway_received.is_some() && self.role == Role::Client)))
    }

    /// Whether the graceful shutdown's first GOAWAY is out and the final one is not (the
    /// caller bounds the wait for the PING's answer, then calls [`Connection::finish_shutdown`]).
    pub fn shutdown_announced(&self) -> bool {
        self.shutdown == Shutdown::Announced
    }

    /// Whether we or the peer started to go away.
    pub fn is_going_away(&self) -> bool {
        self.shutdown != Shutdown::Running || self.goaway_received.is_some()
    }

    /// Streams we may open now (client role): min(the peer's limit, ours) minus those open, 0
    /// before the peer's SETTINGS and after GOAWAY.
    pub fn capacity(&self) -> usize {
        if self.phase != Phase::Open || self.is_going_away() || self.next_stream > MAX_WINDOW {
            return 0;
        }
        let limit = self
            .peer
            .max_concurrent_streams
            .min(self.local.max_concurrent_streams) as usize;
        let ids_left = ((MAX_WINDOW - self.next_stream) / 2 + 1) as usize;
        limit.saturating_sub(self.streams.len()).min(ids_left)
    }

    /// Heap bytes the connection holds (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.decoder.table().heap_bytes()
            + self.encoder.table().heap_bytes()
            + self.head.heap_bytes()
            + self.block.capacity()
            + self.streams.capacity() * std::mem::size_of::<Stream>()
    }

    /// Returns buffers an idle connection does not need (keeps the HPACK tables).
    pub fn shrink_idle(&mut self) {
        if self.streams.is_empty() {
            self.streams = Vec::new();
        }
        if self.pending.is_none() {
            self.block = Vec::new();
        }
        self.head.shrink();
    }

    // ---- receiving ----------------------------------------------------------------------------

    /// Processes whole frames from `input` until one yields an event or the input runs out.
    /// Returns the bytes consumed and the event. Frames we owe (SETTINGS and PING acks, window
    /// updates, resets) are appended to `out`. On a connection error the GOAWAY is written, the
    /// connection reads nothing more, and the caller should close once `out` is flushed.
    pub fn recv(
        &mut self,
        input: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event>), ErrorCode> {
        let mut at = 0;
        if self.phase == Phase::Closed {
            return Ok((input.len(), None));
        }
        if self.phase == Phase::Preface {
            let n = input.len().min(frame::PREFACE.len());
            if input[..n] != frame::PREFACE[..n] {
                return Err(self.fail(ErrorCode::ProtocolError, out));
            }
            if n < frame::PREFACE.len() {
                return Ok((0, None));
            }
            at = n;
            self.phase = Phase::FirstSettings;
        }
        while input.len() - at >= HEADER_LEN {
            let h = FrameHeader::read(input[at..at + HEADER_LEN].try_into().expect("9 bytes"));
            if h.len > self.local.max_frame_size {
                return Err(self.fail(ErrorCode::FrameSizeError, out));
            }
            let end = at + HEADER_LEN + h.len as usize;
            if input.len() < end {
                break;
            }
            let payload = &input[at + HEADER_LEN..end];
            let base = at + HEADER_LEN;
            at = end;
            match self.on_frame(&h, payload, base, input, now_ms, out) {
                Ok(None) => {}
                Ok(Some(ev)) => return Ok((at, Some(ev))),
                Err(H2Error::Connection(code)) => return Err(self.fail(code, out)),
                Err(H2Error::Stream(id, _))
                    if h.kind == kind::WINDOW_UPDATE && self.is_idle_id(id) =>
                {
                    // WINDOW_UPDATE on an idle stream is a connection error (section 5.1).
                    return Err(self.fail(ErrorCode::ProtocolError, out));
                }
                Err(H2Error::Stream(id, code)) => {
                    // Every reset we send costs the peer a glitch (no reset flood for free).
                    if self.glitch(now_ms).is_err() {
                        return Err(self.fail(ErrorCode::EnhanceYourCalm, out));
                    }
                    if let Some(ev) = self.stream_error(id, code, out) {
                        return Ok((at, Some(ev)));
                    }
                }
            }
            if self.phase == Phase::Closed {
                break;
            }
        }
        Ok((at, None))
    }

    /// A connection error: GOAWAY with the code; nothing more is read.
    fn fail(&mut self, code: ErrorCode, out: &mut Vec<u8>) -> ErrorCode {
        if self.phase != Phase::Closed {
            // A later GOAWAY never raises the last stream id of an earlier one (section 6.8).
            let last = match self.shutdown {
                Shutdown::Final { last } => last.min(self.last_peer_stream),
                _ => self.last_peer_stream,
            };
            frame::write_goaway(out, last, code, b"");
            self.phase = Phase::Closed;
        }
        code
    }

    /// A stream error: RST_STREAM; an event if the caller knew the stream.
    /// A stream error: RST_STREAM, and an event (also for streams the caller never saw, such
    /// as refused or malformed ones, so that every reset sent can be counted).
    fn stream_error(&mut self, id: u32, code: ErrorCode, out: &mut Vec<u8>) -> Option<Event> {
        frame::write_rst(out, id, code);
        self.remove(id, true);
        Some(Event::Reset {
            stream: id,
            code,
            remote: false,
        })
    }

    fn glitch(&mut self, now_ms: u64) -> Result<(), H2Error> {
        let l = self.local.limits;
        if self
            .glitches
            .take(now_ms, l.glitch_burst, l.glitches_per_sec)
        {
            Ok(())
        } else {
            Err(self.flooded(Flood::Glitches))
        }
    }

    /// Records that `limit` was exceeded: the connection error to answer with.
    fn flooded(&mut self, limit: Flood) -> H2Error {
        self.flood = Some(limit);
        H2Error::Connection(ErrorCode::EnhanceYourCalm)
    }

    /// The flood limit that ended the connection (GOAWAY ENHANCE_YOUR_CALM), if one did.
    pub fn flood_limit_hit(&self) -> Option<Flood> {
        self.flood
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// Whether `id` names a stream not opened yet (by its initiator).
    fn is_idle_id(&self, id: u32) -> bool {
        let peer_initiated = (id % 2 == 1) == (self.role == Role::Server);
        if peer_initiated {
            id > self.last_peer_stream
        } else {
            id >= self.next_stream
        }
    }

    /// Removes an active stream; marks it reset when `reset_by_us` (also a stream that never
    /// became active: refused, malformed). True if it was active.
    fn remove(&mut self, id: u32, reset_by_us: bool) -> bool {
        if reset_by_us {
            self.mark(id, true);
        }
        let Some(i) = self.find(id) else {
            return false;
        };
        self.streams.swap_remove(i);
        true
    }

    /// The highest id of the window of remembered streams.
    fn window_top(&self) -> u32 {
        match self.role {
            Role::Server => self.last_peer_stream,
            Role::Client => self.next_stream.saturating_sub(2),
        }
    }

    /// The window's bit for `id`, if `id` is in it.
    fn window_bit(&self, id: u32) -> Option<u32> {
        let top = self.window_top();
        if id > top || id == 0 || (top - id) % 2 != 0 {
            return None;
        }
        let i = (top - id) / 2;
        (i < 128).then_some(i)
    }

    /// Moves the window's top from `old` to the current one (ids opened in between are not
    /// marked yet).
    fn slide(&mut self, old: u32) {
        let top = self.window_top();
        let shift = if old == 0 || (top - old) % 2 != 0 {
            128
        } else {
            (top - old) / 2
        };
        if shift >= 128 {
            self.opened = 0;
            self.reset = 0;
        } else {
            self.opened <<= shift;
            self.reset <<= shift;
        }
    }

    /// Notes that stream `id` existed (and, with `reset`, that we reset or ignored it).
    fn mark(&mut self, id: u32, reset: bool) {
        if let Some(i) = self.window_bit(id) {
            self.opened |= 1 << i;
            if reset {
                self.reset |= 1 << i;
            }
        }
    }

    /// How a stream that is not active ended.
    fn ended(&self, id: u32) -> Ended {
        match self.window_bit(id) {
            None => Ended::Forgotten,
            Some(i) if self.reset & (1 << i) != 0 => Ended::ResetByUs,
            Some(i) if self.opened & (1 << i) != 0 => Ended::Normal,
            Some(_) => Ended::NeverOpened,
        }
    }

    fn on_frame(
        &mut self,
        h: &FrameHeader,
        payload: &[u8],
        base: usize,
        input: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Step {
        if let Some(p) = self.pending {
            if h.kind != kind::CONTINUATION || h.stream != p.stream {
                return Err(H2Error::Connection(ErrorCode::ProtocolError));
            }
        }
        if self.phase == Phase::FirstSettings && (h.kind != kind::SETTINGS || h.has(flag::ACK)) {
            return Err(H2Error::Connection(ErrorCode::ProtocolError));
        }
        match frame::parse(h, payload)? {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => {
                let start = data.as_ptr() as usize - input.as_ptr() as usize;
                debug_assert!(start >= base);
                self.on_data(stream, start, data.len(), end_stream, flow_len, now_ms, out)
            }
            Frame::Headers {
                stream,
                fragment,
                end_stream,
                end_headers,
                priority,
            } => {
                let self_dependent = priority.is_some_and(|p| p.depends_on == stream);
                if !end_headers {
                    if fragment.len() > self.local.limits.max_block_bytes as usize {
                        return Err(self.flooded(Flood::HeaderBlock));
                    }
                    self.block.clear();
                    self.block.extend_from_slice(fragment);
                    self.pending = Some(PendingBlock {
                        stream,
                        end_stream,
                        frames: 0,
                        self_dependent,
                    });
                    return Ok(None);
                }
                self.on_block(stream, end_stream, self_dependent, fragment, now_ms, out)
            }
            Frame::Continuation {
                stream: _,
                fragment,
                end_headers,
            } => {
                let Some(mut p) = self.pending else {
                    return Err(H2Error::Connection(ErrorCode::ProtocolError));
                };
                p.frames += 1;
                let limits = self.local.limits;
                if p.frames > limits.max_continuations {
                    return Err(self.flooded(Flood::Continuations));
                }
                if self.block.len() + fragment.len() > limits.max_block_bytes as usize {
                    return Err(self.flooded(Flood::HeaderBlock));
                }
                if fragment.is_empty() && !end_headers {
                    self.glitch(now_ms)?;
                }
                self.block.extend_from_slice(fragment);
                if !end_headers {
                    self.pending = Some(p);
                    return Ok(None);
                }
                self.pending = None;
                let block = std::mem::take(&mut self.block);
                let r = self.on_block(
                    p.stream,
                    p.end_stream,
                    p.self_dependent,
                    &block,
                    now_ms,
                    out,
                );
                self.block = block;
                self.block.clear();
                r
            }
            Frame::Priority { stream, priority } => {
                if priority.depends_on == stream {
                    return Err(H2Error::Stream(stream, ErrorCode::ProtocolError));
                }
                Ok(None)
            }
            Frame::RstStream { stream, code } => {
                if self.is_idle_id(stream) {
                    return Err(H2Error::Connection(ErrorCode::ProtocolError));
                }
                if !self.remove(stream, false) {
                    return Ok(None);
                }
                let l = self.local.limits;
                if !self.resets.take(now_ms, l.reset_burst, l.resets_per_sec) {
                    return Err(self.flooded(Flood::Resets));
                }
                Ok(Some(Event::Reset {
                    stream,
                    code,
                    remote: true,
                }))
            }
            Frame::Settings { ack: true, .. } => {
                if !self.acked {
                    self.acked = true;
                    self.apply_local_settings();
                }
                Ok(None)
            }
            Frame::Settings {
                ack: false,
                payload,
            } => {
                if self.phase == Phase::FirstSettings {
                    self.phase = Phase::Open;
                } else {
                    self.glitch(now_ms)?;
                }
                self.apply_peer_settings(payload)?;
                frame::write_settings_ack(out);
                Ok(Some(Event::Settings))
            }
            Frame::PushPromise { .. } => Err(H2Error::Connection(ErrorCode::ProtocolError)),
            Frame::Ping { ack: true, data } => {
                if data == SHUTDOWN_PING && self.shutdown == Shutdown::Announced {
                    self.finish_shutdown(out);
                }
                Ok(None)
            }
            Frame::Ping { ack: false, data } => {
                self.glitch(now_ms)?;
                frame::write_ping(out, data, true);
                Ok(None)
            }
            Frame::GoAway {
                last_stream, code, ..
            } => self.on_goaway(last_stream, code),
            Frame::WindowUpdate { stream, increment } => {
                self.on_window_update(stream, increment, now_ms)
            }
            Frame::Unknown { .. } => Ok(None),
        }
    }

    fn apply_local_settings(&mut self) {
        // Our initial window is now in force: streams opened before the ack move by the change.
        let delta = i64::from(self.local.initial_window_size) - 65_535;
        for s in &mut self.streams {
            s.recv_window += delta;
        }
        self.decoder
            .set_max_allowed(self.local.header_table_size as usize);
    }

    fn apply_peer_settings(&mut self, payload: &[u8]) -> Result<(), H2Error> {
        let proto = |_| H2Error::Connection(ErrorCode::ProtocolError);
        for (id, v) in frame::settings(payload) {
            match id {
                setting::HEADER_TABLE_SIZE => {
                    self.peer.header_table_size = v;
                    self.encoder.set_peer_limit(v as usize);
                }
                setting::ENABLE_PUSH => {
                    if v > 1 || (v == 1 && self.role == Role::Client) {
                        return Err(proto(()));
                    }
                    self.peer.enable_push = v == 1;
                }
                setting::MAX_CONCURRENT_STREAMS => self.peer.max_concurrent_streams = v,
                setting::INITIAL_WINDOW_SIZE => {
                    if v > MAX_WINDOW {
                        return Err(H2Error::Connection(ErrorCode::FlowControlError));
                    }
                    let delta = i64::from(v) - i64::from(self.peer.initial_window_size);
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > i64::from(MAX_WINDOW) {
                            return Err(H2Error::Connection(ErrorCode::FlowControlError));
                        }
                    }
                    self.peer.initial_window_size = v;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::MIN_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&v) {
                        return Err(proto(()));
                    }
                    self.peer.max_frame_size = v;
                }
                setting::MAX_HEADER_LIST_SIZE => self.peer.max_header_list_size = v,
                setting::ENABLE_CONNECT_PROTOCOL => {
                    if v > 1 || (self.peer.enable_connect_protocol && v == 0) {
                        return Err(proto(()));
                    }
                    self.peer.enable_connect_protocol = v == 1;
                }
                _ => {} // unknown settings are ignored (section 6.5.2)
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        id: u32,
        start: usize,
        len: usize,
        end_stream: bool,
        flow_len: u32,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Step {
        let flow = i64::from(flow_len);
        if flow > self.recv_window {
            return Err(H2Error::Connection(ErrorCode::FlowControlError));
        }
        // The connection window is returned on receipt: the stream windows are what pace a
        // sender (at most max_concurrent_streams x initial_window_size bytes are ever held).
        self.recv_window -= flow;
        self.credit_connection(flow_len, out);
        let Some(i) = self.find(id) else {
            if self.is_idle_id(id) {
                return Err(H2Error::Connection(ErrorCode::ProtocolError));
            }
            // A closed stream: frames after our reset are expected (in flight) and ignored.
            return match self.ended(id) {
                Ended::ResetByUs | Ended::Forgotten => Ok(None),
                Ended::Normal | Ended::NeverOpened => {
                    Err(H2Error::Stream(id, ErrorCode::StreamClosed))
                }
            };
        };
        let s = &mut self.streams[i];
        if !s.state.peer_may_send() || !s.head_done {
            let code = if s.head_done {
                ErrorCode::StreamClosed
            } else {
                ErrorCode::ProtocolError
            };
            return Err(H2Error::Stream(id, code));
        }
        if flow > s.recv_window {
            return Err(H2Error::Stream(id, ErrorCode::FlowControlError));
        }
        s.recv_window -= flow;
        s.received += len as u64;
        let over = s.content_length.is_some_and(|cl| s.received > cl);
        let short = end_stream && s.content_length.is_some_and(|cl| s.received != cl);
        if over || short {
            return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
        }
        // Padding is ours to return at once.
        let padding = flow_len - len as u32;
        if end_stream {
            s.state = s.state.recv_end();
        }
        if padding > 0 {
            self.consumed(id, padding as usize, out);
        }
        if len == 0 && !end_stream {
            self.glitch(now_ms)?;
            return Ok(None);
        }
        if self
            .find(id)
            .is_some_and(|i| self.streams[i].state == StreamState::Closed)
        {
            self.remove(id, false);
        }
        Ok(Some(Event::Data {
            stream: id,
            start,
            len,
            end_stream,
        }))
    }

    fn credit_connection(&mut self, n: u32, out: &mut Vec<u8>) {
        self.conn_unacked += n;
        self.maybe_update_connection(out);
    }

    fn maybe_update_connection(&mut self, out: &mut Vec<u8>) {
        if self.conn_unacked > 0 && self.conn_unacked >= self.local.connection_window / 2 {
            frame::write_window_update(out, 0, self.conn_unacked);
            self.recv_window += i64::from(self.conn_unacked);
            self.conn_unacked = 0;
        }
    }

    /// The caller passed on `n` body bytes of `stream`: reopen its window (WINDOW_UPDATE once
    /// half a window is consumed). Streams that are gone are ignored.
    pub fn consumed(&mut self, stream: u32, n: usize, out: &mut Vec<u8>) {
        let n = n as u32;
        if let Some(i) = self.find(stream) {
            let window = self.local.initial_window_size;
            let s = &mut self.streams[i];
            if s.state.peer_may_send() {
                s.unacked += n;
                if s.unacked >= window / 2 {
                    frame::write_window_update(out, stream, s.unacked);
                    s.recv_window += i64::from(s.unacked);
                    s.unacked = 0;
                }
            }
        }
    }

    fn on_block(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Step {
        let max_list = self.local.max_header_list_size as usize;
        if self
            .decoder
            .decode(block, &mut self.head, max_list)
            .is_err()
        {
            return Err(H2Error::Connection(ErrorCode::CompressionError));
        }
        match self.role {
            Role::Server => self.on_request_block(id, end_stream, self_dependent, now_ms, out),
            Role::Client => self.on_response_block(id, end_stream, self_dependent),
        }
    }

    fn on_request_block(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Step {
        if id % 2 == 0 {
            return Err(H2Error::Connection(ErrorCode::ProtocolError));
        }
        if let Some(i) = self.find(id) {
            // A second block on an open stream: trailers, which must end the stream.
            let s = self.streams[i];
            if !s.state.peer_may_send() {
                return Err(H2Error::Stream(id, ErrorCode::StreamClosed));
            }
            if !end_stream || self_dependent || self.head.oversize {
                return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
            }
            self.trailers(i, id)
        } else if id <= self.last_peer_stream {
            // A block for a stream that is not active (the block was decoded above, so HPACK
            // stays in step): late trailers after our reset are expected and ignored.
            match self.ended(id) {
                Ended::ResetByUs | Ended::Forgotten => Ok(None),
                Ended::Normal => Err(H2Error::Connection(ErrorCode::StreamClosed)),
                Ended::NeverOpened => Err(H2Error::Connection(ErrorCode::ProtocolError)),
            }
        } else {
            let old = self.last_peer_stream;
            self.last_peer_stream = id;
            self.slide(old);
            if let Shutdown::Final { last } = self.shutdown {
                if id > last {
                    // After the final GOAWAY: ignored (section 6.8), and its late frames too.
                    self.mark(id, true);
                    return Ok(None);
                }
            }
            self.mark(id, false);
            if self_dependent {
                return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
            }
            if self.streams.len() >= self.local.max_concurrent_streams as usize {
                return Err(H2Error::Stream(id, ErrorCode::RefusedStream));
            }
            if self.head.oversize {
                // Answered with 431 by the caller; a glitch, so oversize blocks cannot be
                // repeated for free.
                self.glitch(now_ms)?;
                self.open(id, StreamState::Open, None);
                let i = self.streams.len() - 1;
                self.streams[i].head_done = true;
                if end_stream {
                    self.streams[i].state = StreamState::HalfClosedRemote;
                }
                return Ok(Some(Event::TooLarge { stream: id }));
            }
            let checked = match message::check(
                &self.head,
                message::Kind::Request {
                    extended_connect: self.local.enable_connect_protocol,
                },
            ) {
                Ok(c) => c,
                Err(_) => return Err(H2Error::Stream(id, ErrorCode::ProtocolError)),
            };
            if end_stream && checked.content_length.is_some_and(|n| n > 0) {
                return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
            }
            self.checked = checked;
            let state = if end_stream {
                StreamState::HalfClosedRemote
            } else {
                StreamState::Open
            };
            self.open(id, state, checked.content_length);
            let i = self.streams.len() - 1;
            self.streams[i].head_done = true;
            let _ = out;
            Ok(Some(Event::Headers {
                stream: id,
                end_stream,
            }))
        }
    }

    fn trailers(&mut self, i: usize, id: u32) -> Step {
        if message::check(&self.head, message::Kind::Trailers).is_err() {
            return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
        }
        let s = &mut self.streams[i];
        if s.content_length.is_some_and(|cl| cl != s.received) {
            return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
        }
        s.state = s.state.recv_end();
        if s.state == StreamState::Closed {
            self.remove(id, false);
        }
        Ok(Some(Event::Trailers { stream: id }))
    }

    fn on_response_block(&mut self, id: u32, end_stream: bool, self_dependent: bool) -> Step {
        let Some(i) = self.find(id) else {
            if self.is_idle_id(id) || id % 2 == 0 {
                return Err(H2Error::Connection(ErrorCode::ProtocolError));
            }
            return match self.ended(id) {
                Ended::ResetByUs | Ended::Forgotten => Ok(None),
                Ended::Normal | Ended::NeverOpened => {
                    Err(H2Error::Stream(id, ErrorCode::StreamClosed))
                }
            };
        };
        let s = self.streams[i];
        if !s.state.peer_may_send() {
            return Err(H2Error::Stream(id, ErrorCode::StreamClosed));
        }
        if self_dependent || self.head.oversize {
            return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
        }
        if s.head_done {
            if !end_stream {
                return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
            }
            return self.trailers(i, id);
        }
        let checked = message::check(&self.head, message::Kind::Response)
            .map_err(|_| H2Error::Stream(id, ErrorCode::ProtocolError))?;
        let informational = checked.status < 200;
        if informational && end_stream {
            return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
        }
        self.checked = checked;
        let s = &mut self.streams[i];
        if !informational {
            s.head_done = true;
            // A response to HEAD, a 204 and a 304 have no content whatever their
            // content-length says (RFC 9110 sections 6.4.1 and 8.6; RFC 9113 section 8.1.1).
            let bodiless = s.no_body || matches!(checked.status, 204 | 304);
            s.content_length = checked.content_length.filter(|_| !bodiless);
            if end_stream && s.content_length.is_some_and(|n| n > 0) {
                return Err(H2Error::Stream(id, ErrorCode::ProtocolError));
            }
        }
        if end_stream {
            s.state = s.state.recv_end();
            if s.state == StreamState::Closed {
                self.remove(id, false);
            }
        }
        Ok(Some(Event::Headers {
            stream: id,
            end_stream,
        }))
    }

    fn open(&mut self, id: u32, state: StreamState, content_length: Option<u64>) {
        let recv = if self.acked {
            self.local.initial_window_size
        } else {
            65_535
        };
        self.streams.push(Stream {
            id,
            state,
            send_window: i64::from(self.peer.initial_window_size),
            recv_window: i64::from(recv),
            unacked: 0,
            content_length,
            received: 0,
            head_done: false,
            no_body: false,
        });
    }

    fn on_goaway(&mut self, last_stream: u32, code: ErrorCode) -> Step {
        let last = self
            .goaway_received
            .map_or(last_stream, |l| l.min(last_stream));
        self.goaway_received = Some(last);
        Ok(Some(Event::GoAway {
            last_stream: last,
            code,
        }))
    }

    /// Client role, after [`Event::GoAway`]: the next stream the server will not process (above
    /// its last_stream), removed; call until `None`. Those requests may be retried elsewhere.
    pub fn take_refused(&mut self) -> Option<u32> {
        let last = self.goaway_received?;
        let i = self.streams.iter().position(|s| s.id > last)?;
        let id = self.streams.swap_remove(i).id;
        self.mark(id, true); // the server will not answer it: late frames are ignored
        Some(id)
    }

    fn on_window_update(&mut self, id: u32, inc: u32, now_ms: u64) -> Step {
        // Real peers return windows in large steps; a stream of tiny updates is a flood.
        if inc < SMALL_WINDOW_UPDATE {
            self.glitch(now_ms)?;
        }
        let inc = i64::from(inc);
        if id == 0 {
            self.send_window += inc;
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(H2Error::Connection(ErrorCode::FlowControlError));
            }
            return Ok(Some(Event::Writable));
        }
        let Some(i) = self.find(id) else {
            if self.is_idle_id(id) {
                return Err(H2Error::Connection(ErrorCode::ProtocolError));
            }
            return Ok(None); // closed: ignored
        };
        let s = &mut self.streams[i];
        s.send_window += inc;
        if s.send_window > i64::from(MAX_WINDOW) {
            return Err(H2Error::Stream(id, ErrorCode::FlowControlError));
        }
        if !s.state.may_send() {
            self.glitch(now_ms)?;
            return Ok(None);
        }
        Ok(Some(Event::Writable))
    }

    // ---- sending ------------------------------------------------------------------------------

    /// Opens a stream for a request (client role): its id, or `None` without capacity.
    pub fn open_stream(&mut self) -> Option<u32> {
        if self.role != Role::Client || self.capacity() == 0 {
            return None;
        }
        let id = self.next_stream;
        let old = self.window_top();
        self.next_stream += 2;
        self.slide(old);
        self.mark(id, false);
        self.open(id, StreamState::Open, None);
        Some(id)
    }

    /// Writes a header block (HEADERS, then CONTINUATION frames beyond the peer's frame size)
    /// whose fields `fields` encodes. A final response (or request) head, interim 1xx heads and
    /// trailers all go through here; `end_stream` ends our side.
    pub fn send_headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        out: &mut Vec<u8>,
        fields: impl FnOnce(&mut HeaderWriter<'_>),
    ) {
        let at = out.len();
        frame::write_header(out, 0, kind::HEADERS, 0, stream);
        let block_at = out.len();
        self.encoder.begin_block(out);
        fields(&mut HeaderWriter {
            encoder: &mut self.encoder,
            out,
        });
        let len = out.len() - block_at;
        let max = self.peer.max_frame_size as usize;
        let mut flags = if end_stream { flag::END_STREAM } else { 0 };
        if len <= max {
            flags |= flag::END_HEADERS;
            patch_header(out, at, len, kind::HEADERS, flags, stream);
        } else {
            let rest = out.split_off(block_at + max);
            patch_header(out, at, max, kind::HEADERS, flags, stream);
            let chunks = rest.len().div_ceil(max);
            for (n, c) in rest.chunks(max).enumerate() {
                let f = if n + 1 == chunks {
                    flag::END_HEADERS
                } else {
                    0
                };
                frame::write_header(out, c.len(), kind::CONTINUATION, f, stream);
                out.extend_from_slice(c);
            }
        }
        if end_stream {
            self.end_local(stream);
        }
    }

    fn end_local(&mut self, stream: u32) {
        if let Some(i) = self.find(stream) {
            let s = &mut self.streams[i];
            s.state = s.state.send_end();
            if s.state == StreamState::Closed {
                self.remove(stream, false);
            }
        }
    }

    /// Bytes of body `stream` may send now (both windows).
    pub fn send_capacity(&self, stream: u32) -> usize {
        match self.find(stream) {
            Some(i) if self.streams[i].state.may_send() => {
                self.streams[i].send_window.min(self.send_window).max(0) as usize
            }
            _ => 0,
        }
    }

    /// Writes as much of `data` as the windows allow, in frames of the peer's size; END_STREAM
    /// goes on the last frame if all of `data` went. Returns the bytes taken.
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> usize {
        let n = data.len().min(self.send_capacity(stream));
        if n == 0 && !(data.is_empty() && end_stream) {
            return 0;
        }
        let max = self.peer.max_frame_size as usize;
        let all = n == data.len();
        let mut sent = 0;
        loop {
            let c = (n - sent).min(max);
            let last = sent + c == n;
            frame::write_data(
                out,
                stream,
                &data[sent..sent + c],
                last && all && end_stream,
            );
            sent += c;
            if last {
                break;
            }
        }
        self.send_window -= n as i64;
        if let Some(i) = self.find(stream) {
            self.streams[i].send_window -= n as i64;
        }
        if all && end_stream {
            self.end_local(stream);
        }
        n
    }

    /// Resets a stream (RST_STREAM with `code`).
    pub fn reset(&mut self, stream: u32, code: ErrorCode, out: &mut Vec<u8>) {
        frame::write_rst(out, stream, code);
        self.remove(stream, true);
    }

    /// Starts the graceful shutdown (section 6.8): GOAWAY with the largest id and a PING; the
    /// final GOAWAY follows the PING's acknowledgement (or [`Connection::finish_shutdown`]).
    pub fn begin_shutdown(&mut self, out: &mut Vec<u8>) {
        if self.shutdown != Shutdown::Running || self.phase == Phase::Closed {
            return;
        }
        if self.role == Role::Client {
            self.finish_shutdown(out);
            return;
        }
        frame::write_goaway(out, MAX_WINDOW, ErrorCode::NoError, b"");
        frame::write_ping(out, SHUTDOWN_PING, false);
        self.shutdown = Shutdown::Announced;
    }

    /// Client role: the request on `stream` is HEAD, so its response carries no content
    /// whatever its content-length says.
    pub fn expect_no_body(&mut self, stream: u32) {
        if let Some(i) = self.find(stream) {
            self.streams[i].no_body = true;
        }
    }

    /// Sends the final GOAWAY now (no new stream is processed after it).
    pub fn finish_shutdown(&mut self, out: &mut Vec<u8>) {
        if matches!(self.shutdown, Shutdown::Final { .. }) || self.phase == Phase::Closed {
            return;
        }
        let last = self.last_peer_stream;
        frame::write_goaway(out, last, ErrorCode::NoError, b"");
        self.shutdown = Shutdown::Final { last };
    }

    /// Closes with a connection error of our own (for example a timeout): GOAWAY with `code`.
    pub fn abort(&mut self, code: ErrorCode, out: &mut Vec<u8>) {
        self.fail(code, out);
    }

    /// The highest stream id the peer opened (the last_stream_id of our GOAWAY).
    pub fn last_peer_stream(&self) -> u32 {
        self.last_peer_stream
    }
}

fn patch_header(out: &mut [u8], at: usize, len: usize, kind: u8, flags: u8, stream: u32) {
    let l = (len as u32).to_be_bytes();
    out[at..at + 5].copy_from_slice(&[l[1], l[2], l[3], kind, flags]);
    out[at + 5..at + 9].copy_from_slice(&stream.to_be_bytes());
}

/// Encodes the fields of one header block.
pub struct HeaderWriter<'a> {
    encoder: &'a mut Encoder,
    out: &'a mut Vec<u8>,
}

impl HeaderWriter<'_> {
    /// Appends a field (names must already be lowercase).
    pub fn field(&mut self, name: &[u8], value: &[u8], how: Indexing) {
        self.encoder.encode(name, value, how, self.out);
    }
}

#[cfg(test)]
mod tests;
