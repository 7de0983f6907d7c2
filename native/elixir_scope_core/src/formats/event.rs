//! The event model: a fixed-size [`Header`] per event plus an optional payload of
//! External Term Format bytes.
//!
//! The core never interprets BEAM terms. Pids and atoms arrive as opaque `u64` handles chosen by
//! the NIF layer (for a live VM: the term's own immediate value, stable for the VM's lifetime), so
//! the capture path stores them without any lookup.

/// Position of an event in the log: 1 for the first stored event, then strictly increasing with no
/// gaps among stored events.
pub type Seq = u64;

/// Monotonic time in nanoseconds, as `erlang:monotonic_time(nanosecond)` reports it.
pub type Timestamp = i64;

/// Opaque handle of a process identifier (0 means "no process").
pub type PidKey = u64;

/// Opaque handle of an atom (0 means "none").
pub type AtomKey = u64;

/// What happened. The discriminants are stable: they are stored, and bit `1 << kind` is used in
/// [`KindMask`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// `pid` spawned `peer`; payload: the initial `{M, F, Args}`.
    Spawn = 0,
    /// `pid` exited; payload: the exit reason.
    Exit = 1,
    /// `pid` linked to `peer`.
    Link = 2,
    /// `pid` unlinked from `peer`.
    Unlink = 3,
    /// `pid` registered a name; payload: the name.
    Register = 4,
    /// `pid` lost a registered name; payload: the name.
    Unregister = 5,
    /// `pid` sent a message to `peer`; payload: the message.
    Send = 6,
    /// `pid` sent a message to a process that does not exist; payload: the message.
    SendToDead = 7,
    /// A message arrived in `pid`'s mailbox; payload: the message.
    Receive = 8,
    /// `pid` called `module:function/arity`; payload: the argument list.
    Call = 9,
    /// A traced call returned; payload: the return value.
    Return = 10,
    /// A traced call raised; payload: `{Class, Reason}`.
    Exception = 11,
    /// A process's state after a callback (or a snapshot); `module`/`function` name the
    /// callback; payload: the state.
    State = 12,
    /// A supervisor's action, recorded by the Elixir side; payload: a description map.
    Supervisor = 13,
    /// A variable binding in a tracked function (`use ElixirScope.Track`): `peer` is the seq of
    /// the call's entry event (0 for the entry itself); payload: `{name, line, value}`.
    Var = 14,
    /// A `receive ... after` in `pid` timed out (the VM reports it as a `receive` of the atom
    /// `timeout` from no process; see `ElixirScope.Tracer`); no payload.
    Timeout = 15,
    /// `pid` started being traced (recorded by the Elixir side): a process is known from then
    /// on even before it does anything; payload: `{initial_call, registered_name | nil}`.
    Traced = 16,
    /// A sample of `pid`'s load, recorded by the Elixir side at an interval; payload:
    /// `{message_queue_len, reductions, memory}`.
    Metrics = 17,
    /// ElixirScope changed what it captures (a limit tripped, a trigger fired, load thinned
    /// the capture, a watch started or stopped), recorded by the Elixir side whatever the level;
    /// `pid` is ElixirScope's own process; payload: a map saying what and why.
    Control = 18,
    /// The callers of a traced call, when its watch asked for them (`stack: true`), recorded
    /// right after the call event; payload: `{call_seq, [frame]}`, each frame the VM's text
    /// (`"'Elixir.MyApp.Web':show/2"`), innermost first.
    Stack = 19,
}

impl Kind {
    /// Every kind, in discriminant order.
    pub const ALL: [Kind; 20] = [
        Kind::Spawn,
        Kind::Exit,
        Kind::Link,
        Kind::Unlink,
        Kind::Register,
        Kind::Unregister,
        Kind::Send,
        Kind::SendToDead,
        Kind::Receive,
        Kind::Call,
        Kind::Return,
        Kind::Exception,
        Kind::State,
        Kind::Supervisor,
        Kind::Var,
        Kind::Timeout,
        Kind::Traced,
        Kind::Metrics,
        Kind::Control,
        Kind::Stack,
    ];

    /// The kind's name as the Elixir API spells it (`send_to_dead`, `receive`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spawn => "spawn",
            Kind::Exit => "exit",
            Kind::Link => "link",
            Kind::Unlink => "unlink",
            Kind::Register => "register",
            Kind::Unregister => "unregister",
            Kind::Send => "send",
            Kind::SendToDead => "send_to_dead",
            Kind::Receive => "receive",
            Kind::Call => "call",
            Kind::Return => "return",
            Kind::Exception => "exception",
            Kind::State => "state",
            Kind::Supervisor => "supervisor",
            Kind::Var => "var",
            Kind::Timeout => "timeout",
            Kind::Traced => "traced",
            Kind::Metrics => "metrics",
            Kind::Control => "control",
            Kind::Stack => "stack",
        }
    }

    /// The kind with this name, if any.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind with this discriminant, if any.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get(v as usize).copied()
    }

    /// Whether events of this kind are kept whatever the sample rate (a process's birth and
    /// death, the start of its tracing, its metrics samples (so that every sampled process has
    /// them), and ElixirScope's own changes of what it captures, are never sampled away).
    pub const fn is_critical(self) -> bool {
        matches!(
            self,
            Kind::Spawn | Kind::Exit | Kind::Traced | Kind::Control
        )
    }

    /// This kind's bit in a [`KindMask`].
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of kinds as a bit mask (bit `1 << kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KindMask(pub u32);

impl KindMask {
    /// No kind.
    pub const NONE: KindMask = KindMask(0);
    /// Every kind.
    pub const ALL: KindMask = KindMask((1 << Kind::ALL.len()) - 1);

    /// A mask holding exactly `kinds`.
    pub fn of(kinds: &[Kind]) -> KindMask {
        KindMask(kinds.iter().fold(0, |m, k| m | k.bit()))
    }

    /// Whether `kind` is in the set.
    #[inline]
    pub const fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// Flag bits of [`Header::flags`].
pub mod flags {
    /// The payload was over the cap: it holds `[full_len u64 LE][hash u64 LE][prefix]`, see
    /// [`truncate_payload`](super::truncate_payload).
    pub const TRUNCATED: u8 = 1;
    /// The peer is not a local pid (a registered name, a remote pid, a port): the payload is the
    /// ETF of `{Peer, Data}` instead of `Data`.
    pub const PEER_IN_PAYLOAD: u8 = 2;
    /// The byte budget was spent: the event is kept without its payload.
    pub const PAYLOAD_DROPPED: u8 = 4;
    /// A state event equal to the process's previous state: its payload is shared with that
    /// event, not stored again.
    pub const STATE_UNCHANGED: u8 = 8;
    /// A state stored as a change to an earlier state of its process, in a live capture's log
    /// only (see `capture::delta`); [`PAYLOAD_DROPPED`] is set with it, so that a reader that
    /// does not resolve it never takes the record for the state.
    pub const STATE_DELTA: u8 = 16;
}

/// The fixed-size part of an event. `Copy`, 48 bytes, written once by the capturing thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Header {
    /// Monotonic nanoseconds when the tracer saw the event.
    pub ts: Timestamp,
    /// The process the event happened in.
    pub pid: PidKey,
    /// The other process (spawned child, link peer, message destination), or 0.
    pub peer: PidKey,
    /// Module atom of a call/return/exception, or 0.
    pub module: AtomKey,
    /// Function atom of a call/return/exception, or 0.
    pub function: AtomKey,
    /// Arity of a call/return/exception.
    pub arity: u8,
    /// The [`Kind`] discriminant.
    pub kind: u8,
    /// [`flags`] bits.
    pub flags: u8,
}

impl Header {
    /// The header's kind. Headers are only built from a [`Kind`], so this never fails for a header
    /// read from the log; a corrupt value maps to `None`.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }

    /// The peer process, or 0 for none. A `:var` event's `peer` holds the seq of its call's
    /// entry instead, which is not a process: every reader of processes goes through here.
    #[inline]
    pub fn peer_pid(&self) -> PidKey {
        if self.kind == Kind::Var as u8 {
            0
        } else {
            self.peer
        }
    }
}

/// A stored event as read back from the log: its position, header and payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The event's position.
    pub seq: Seq,
    /// The fixed-size part.
    pub header: Header,
    /// ETF bytes (or the truncated form, see [`flags::TRUNCATED`]); empty when the event has none.
    pub payload: &'a [u8],
}

/// What a truncated payload keeps of the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated<'a> {
    /// Size in bytes of the full ETF encoding (a lower bound when `exact` is false).
    pub full_len: u64,
    /// Whether `full_len` is exact.
    pub exact: bool,
    /// xxh3 (seeded with the full size) of the bytes the tracer encoded before it stopped
    /// copying, at least the first 64 KiB: a content hash for payloads up to that size.
    pub hash: u64,
    /// The first bytes of the encoding.
    pub prefix: &'a [u8],
}

impl<'a> EventRef<'a> {
    /// Whether this is an unchanged state written without its payload (in a segment, after
    /// the process's first state there): its payload is that of the process's state before it.
    pub fn shares_payload(&self) -> bool {
        self.header.kind == Kind::State as u8
            && self.header.flags & flags::STATE_UNCHANGED != 0
            && self.payload.is_empty()
    }

    /// The event's data as ETF without the version byte: its payload, or the `data` of a
    /// `{peer, data}` payload. `None` for truncated or dropped payloads. The bytes are not
    /// checked to hold exactly one term (a malformed payload simply matches nothing).
    pub fn data(&self) -> Option<&'a [u8]> {
        if self.header.flags & (flags::TRUNCATED | flags::PAYLOAD_DROPPED) != 0 {
            return None;
        }
        let body = self.payload.strip_prefix(&[crate::formats::etf::VERSION])?;
        if self.header.flags & flags::PEER_IN_PAYLOAD != 0 {
            // `{peer, data}`: what follows the peer.
            if body.get(..2) != Some(&[104, 2]) {
                return None;
            }
            body.get(crate::formats::etf::skip(body, 2)?..)
        } else {
            Some(body)
        }
    }

    /// The tag of a message: its data when an atom, or the first element of a tuple when that
    /// is an atom.
    pub fn tag(&self) -> Option<&'a str> {
        let data = self.data()?;
        match *data.first()? {
            104 if data.get(1).is_some_and(|&n| n > 0) => crate::formats::etf::atom_name(data, 2),
            105 if data.get(1..5).is_some_and(|n| n != [0, 0, 0, 0]) => {
                crate::formats::etf::atom_name(data, 5)
            }
            _ => crate::formats::etf::atom_name(data, 0),
        }
    }

    /// The ETF (no version byte) of a peer kept in the payload (a registered name, a remote
    /// pid, a reference a reply went to), when the payload is whole; `None` otherwise.
    pub fn peer_term(&self) -> Option<&'a [u8]> {
        if self.header.flags & flags::PEER_IN_PAYLOAD == 0 {
            return None;
        }
        let body = self.kept_body()?;
        (body.get(..2) == Some(&[104, 2])).then_some(())?;
        body.get(2..crate::formats::etf::skip(body, 2)?)
    }

    /// The message (or other data) of the payload as far as it was kept: whole, or the first
    /// bytes of a truncated one; without the version byte, and without the peer a send to a
    /// name or a reference keeps beside it. `None` when nothing of it was kept.
    pub fn data_prefix(&self) -> Option<&'a [u8]> {
        let body = self.kept_body()?;
        if self.header.flags & flags::PEER_IN_PAYLOAD != 0 {
            (body.get(..2) == Some(&[104, 2])).then_some(())?;
            body.get(crate::formats::etf::skip(body, 2)?..)
        } else {
            Some(body)
        }
    }

    /// The payload's encoding after its version byte: whole, or the kept prefix of a truncated
    /// one (the same bytes up to where it was cut).
    fn kept_body(&self) -> Option<&'a [u8]> {
        if self.header.flags & flags::PAYLOAD_DROPPED != 0 {
            return None;
        }
        let bytes = match self.truncated() {
            Some(t) => t.prefix,
            None if self.header.flags & flags::TRUNCATED != 0 => return None,
            None => self.payload,
        };
        bytes.strip_prefix(&[crate::formats::etf::VERSION])
    }

    /// For a truncated payload, what it keeps of the original; `None` otherwise.
    pub fn truncated(&self) -> Option<Truncated<'a>> {
        if self.header.flags & flags::TRUNCATED == 0 || self.payload.len() < 16 {
            return None;
        }
        let (len, rest) = self.payload.split_at(8);
        let (hash, prefix) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().ok()?);
        Some(Truncated {
            full_len: len & !INEXACT_LEN,
            exact: len & INEXACT_LEN == 0,
            hash: u64::from_le_bytes(hash.try_into().ok()?),
            prefix,
        })
    }
}

/// High bit of a stored `full_len`: the size is a lower bound.
const INEXACT_LEN: u64 = 1 << 63;

/// Builds the stored form of a payload that is over `cap` bytes, from the `seen` bytes (a prefix
/// of the encoding, or all of it) and the encoding's full size: the size, a hash of `seen` seeded
/// with the size, and as much prefix as fits in `cap` (16 bytes go to size and hash).
pub fn truncate_payload(seen: &[u8], full_len: u64, exact: bool, cap: usize, out: &mut Vec<u8>) {
    out.clear();
    let len = if exact {
        full_len
    } else {
        full_len | INEXACT_LEN
    };
    out.extend_from_slice(&len.to_le_bytes());
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(seen, full_len);
    out.extend_from_slice(&hash.to_le_bytes());
    let keep = cap.saturating_sub(16).min(seen.len());
    out.extend_from_slice(&seen[..keep]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unchanged_states_without_bytes_share_a_payload() {
        let ev = |kind: Kind, flags: u8, payload: &'static [u8]| EventRef {
            seq: 1,
            header: Header {
                kind: kind as u8,
                flags,
                ..Header::default()
            },
            payload,
        };
        assert!(ev(Kind::State, flags::STATE_UNCHANGED, b"").shares_payload());
        assert!(!ev(Kind::State, flags::STATE_UNCHANGED, b"x").shares_payload());
        assert!(!ev(Kind::State, 0, b"").shares_payload());
        assert!(!ev(Kind::Send, flags::STATE_UNCHANGED, b"").shares_payload());
    }

    #[test]
    fn kinds_round_trip_by_name_and_discriminant() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::from_name("nope"), None);
        assert_eq!(Kind::from_u8(200), None);
    }

    #[test]
    fn mask_holds_exactly_its_kinds() {
        let m = KindMask::of(&[Kind::Send, Kind::Receive]);
        assert!(m.contains(Kind::Send) && m.contains(Kind::Receive));
        assert!(!m.contains(Kind::Call));
        assert!(Kind::ALL.iter().all(|k| KindMask::ALL.contains(*k)));
    }

    #[test]
    fn truncated_payload_keeps_length_hash_and_prefix() {
        let full: Vec<u8> = (0..200u8).collect();
        let mut out = Vec::new();
        truncate_payload(&full, 200, true, 64, &mut out);
        assert_eq!(out.len(), 64);
        let ev = EventRef {
            seq: 1,
            header: Header {
                flags: flags::TRUNCATED,
                ..Header::default()
            },
            payload: &out,
        };
        let t = ev.truncated().unwrap();
        assert_eq!((t.full_len, t.exact), (200, true));
        assert_eq!(t.hash, xxhash_rust::xxh3::xxh3_64_with_seed(&full, 200));
        assert_eq!(t.prefix, &full[..48]);
        let mut out2 = Vec::new();
        truncate_payload(&full[..100], 1 << 40, false, 64, &mut out2);
        let ev2 = EventRef {
            payload: &out2,
            ..ev
        };
        let t2 = ev2.truncated().unwrap();
        assert_eq!((t2.full_len, t2.exact), (1 << 40, false));
    }

    #[test]
    fn header_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Header>(), 48);
    }
}
