//! The one parser of `struct uffd_msg` (32 bytes, see `include/uapi/linux/userfaultfd.h`). Every
//! reader of the fd (the fault loop, a reading handler, the pump's ring) reads raw messages and
//! parses them here.

use std::os::fd::{FromRawFd, OwnedFd};

/// Size of a `struct uffd_msg`.
pub const MSG_SIZE: usize = 32;

const PAGEFAULT: u8 = 0x12;
const FORK: u8 = 0x13;
const REMAP: u8 = 0x14;
const REMOVE: u8 = 0x15;
const UNMAP: u8 = 0x16;

const FLAG_WRITE: u64 = 1;
const FLAG_WP: u64 = 2;
const FLAG_MINOR: u64 = 4;

/// Why the kernel stopped the thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// No page is mapped (MISSING registration).
    Missing,
    /// The page is in the page cache but not mapped here (MINOR registration).
    Minor,
    /// A write to a write-protected page (WP registration).
    WriteProtect,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Missing => "missing",
            FaultKind::Minor => "minor",
            FaultKind::WriteProtect => "wp",
        }
    }
}

/// One message read from a userfaultfd.
#[derive(Debug)]
pub enum Message {
    Fault {
        address: usize,
        kind: FaultKind,
        write: bool,
        thread_id: i32,
    },
    /// The child's userfaultfd, installed in this process by the read.
    Fork {
        fd: OwnedFd,
    },
    Remap {
        from: usize,
        to: usize,
        len: usize,
    },
    Remove {
        start: usize,
        end: usize,
    },
    Unmap {
        start: usize,
        end: usize,
    },
    /// An event this parser does not know (a newer kernel's).
    Unknown(u8),
}

fn u64_at(raw: &[u8; MSG_SIZE], at: usize) -> u64 {
    u64::from_ne_bytes(raw[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(raw: &[u8; MSG_SIZE], at: usize) -> u32 {
    u32::from_ne_bytes(raw[at..at + 4].try_into().expect("4 bytes"))
}

/// Parses one message. A fork message's fd becomes owned by the result: parse each message once.
pub fn parse(raw: &[u8; MSG_SIZE]) -> Message {
    let at = |offset| u64_at(raw, offset) as usize;
    match raw[0] {
        PAGEFAULT => {
            let flags = u64_at(raw, 8);
            let kind = if flags & FLAG_MINOR != 0 {
                FaultKind::Minor
            } else if flags & FLAG_WP != 0 {
                FaultKind::WriteProtect
            } else {
                FaultKind::Missing
            };
            Message::Fault { address: at(16), kind, write: flags & FLAG_WRITE != 0, thread_id: u32_at(raw, 24) as i32 }
        }
        FORK => {
            // SAFETY: the kernel installed this fd for the reader when it read the fork event; this
            // message is parsed once, so nothing else owns it.
            Message::Fork { fd: unsafe { OwnedFd::from_raw_fd(u32_at(raw, 8) as i32) } }
        }
        REMAP => Message::Remap { from: at(8), to: at(16), len: at(24) },
        REMOVE => Message::Remove { start: at(8), end: at(16) },
        UNMAP => Message::Unmap { start: at(8), end: at(16) },
        other => Message::Unknown(other),
    }
}

/// Messages read at once by a reader: more are read until EAGAIN.
pub const MESSAGES_PER_READ: usize = 64;

/// A reader's buffer of raw messages.
pub struct Buffer(Box<[[u8; MSG_SIZE]; MESSAGES_PER_READ]>);

impl Default for Buffer {
    fn default() -> Self {
        Buffer(Box::new([[0; MSG_SIZE]; MESSAGES_PER_READ]))
    }
}

impl Buffer {
    /// The whole buffer as bytes, for read(2).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_flattened_mut()
    }

    /// The first `count` messages, parsed.
    pub fn parse(&self, count: usize) -> impl Iterator<Item = Message> + '_ {
        self.0[..count].iter().map(parse)
    }
}

#[cfg(test)]
mod tests {
    //! Properties of the parser: every 32-byte message parses to a message, never a panic; what
    //! the kernel writes comes back field for field.

    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use proptest::prelude::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    const CASES: u32 = 4096;

    fn put_u64(raw: &mut [u8; MSG_SIZE], at: usize, value: u64) {
        raw[at..at + 8].copy_from_slice(&value.to_ne_bytes());
    }

    /// Parses `raw`; a fork message first gets a fresh fd of this test's own (parsing takes
    /// ownership of the fd, so a random number there could close an fd of the harness).
    fn parse_safely(mut raw: [u8; MSG_SIZE]) -> Message {
        if raw[0] == FORK {
            let fd = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC).expect("eventfd")).into_raw_fd();
            raw[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
            let message = parse(&raw);
            assert!(matches!(&message, Message::Fork { fd: owned } if owned.as_raw_fd() == fd));
            return message;
        }
        parse(&raw)
    }

    fn known(code: u8) -> bool {
        (PAGEFAULT..=UNMAP).contains(&code)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn every_event_code_parses_or_is_unknown(code in any::<u8>(), rest in any::<[u8; MSG_SIZE]>()) {
            let mut raw = rest;
            raw[0] = code;
            let message = parse_safely(raw);
            prop_assert_eq!(!matches!(message, Message::Unknown(_)), known(code));
            if let Message::Unknown(unknown) = message {
                prop_assert_eq!(unknown, code);
            }
        }

        #[test]
        fn a_pagefault_round_trips_address_flags_and_thread(
            flags in any::<u64>(),
            address in any::<u64>(),
            ptid in any::<u32>(),
            noise in any::<[u8; MSG_SIZE]>(),
        ) {
            // Reserved bytes and the tail of the union carry noise: the parser must ignore them.
            let mut raw = noise;
            raw[0] = PAGEFAULT;
            put_u64(&mut raw, 8, flags);
            put_u64(&mut raw, 16, address);
            raw[24..28].copy_from_slice(&ptid.to_ne_bytes());
            let Message::Fault { address: got, kind, write, thread_id } = parse(&raw) else {
                return Err(TestCaseError::fail("not parsed as a page fault"));
            };
            prop_assert_eq!(got as u64, address);
            prop_assert_eq!(thread_id as u32, ptid);
            prop_assert_eq!(write, flags & 1 != 0);
            let expected = if flags & 4 != 0 {
                FaultKind::Minor
            } else if flags & 2 != 0 {
                FaultKind::WriteProtect
            } else {
                FaultKind::Missing
            };
            prop_assert_eq!(kind, expected);
        }

        #[test]
        fn range_events_round_trip(
            code in prop::sample::select(vec![REMAP, REMOVE, UNMAP]),
            a in any::<u64>(),
            b in any::<u64>(),
            c in any::<u64>(),
            noise in any::<[u8; MSG_SIZE]>(),
        ) {
            let mut raw = noise;
            raw[0] = code;
            put_u64(&mut raw, 8, a);
            put_u64(&mut raw, 16, b);
            put_u64(&mut raw, 24, c);
            let (a, b, c) = (a as usize, b as usize, c as usize);
            match parse(&raw) {
                Message::Remap { from, to, len } => prop_assert_eq!((code, from, to, len), (REMAP, a, b, c)),
                Message::Remove { start, end } => prop_assert_eq!((code, start, end), (REMOVE, a, b)),
                Message::Unmap { start, end } => prop_assert_eq!((code, start, end), (UNMAP, a, b)),
                _ => return Err(TestCaseError::fail(format!("event {code:#x} parsed as something else"))),
            }
        }
    }

    #[test]
    fn a_fork_event_hands_over_the_fd_it_carries() {
        let fd = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap()).into_raw_fd();
        let mut raw = [0xA5u8; MSG_SIZE];
        raw[0] = FORK;
        raw[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
        let Message::Fork { fd: owned } = parse(&raw) else { panic!("not a fork") };
        assert_eq!(owned.as_raw_fd(), fd);
    }

    #[test]
    fn a_buffer_parses_the_messages_read_into_it_in_order() {
        let mut buffer = Buffer::default();
        let codes = [PAGEFAULT, REMOVE, 0x00, UNMAP, 0xFF];
        for (index, code) in codes.iter().enumerate() {
            let raw = &mut buffer.bytes_mut()[index * MSG_SIZE..(index + 1) * MSG_SIZE];
            raw[0] = *code;
            raw[16..24].copy_from_slice(&(0x1000 * (index as u64 + 1)).to_ne_bytes());
        }
        let messages: Vec<Message> = buffer.parse(codes.len()).collect();
        assert!(matches!(messages[0], Message::Fault { address: 0x1000, .. }));
        assert!(matches!(messages[1], Message::Remove { end: 0x2000, .. }));
        assert!(matches!(messages[2], Message::Unknown(0)));
        assert!(matches!(messages[3], Message::Unmap { .. }));
        assert!(matches!(messages[4], Message::Unknown(0xFF)));
    }
}
