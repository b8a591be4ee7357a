//! I/O tokens: a completion carries a u64 saying what it is for, so the replica can route it
//! without callbacks. Layout: [purpose:8][the purpose's argument:24][index:32]. The purposes that
//! need more than an index carry it as named fields of their variant.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    SuperblockRead,
    SuperblockWrite,
    RecoveryHeaders,
    /// Recovery reads a prepare slot's first sector, then (`whole`), for an intact header of a
    /// larger prepare, the whole prepare.
    RecoveryPrepare {
        whole: bool,
    },
    PrepareWrite,
    HeaderSectorWrite,
    PrepareRead,
    ClientReplyWrite,
    CheckpointWrite,
    CheckpointRead,
    /// A chunk written by the state sync of this generation: a write of an abandoned sync
    /// completes into nothing.
    SyncChunkWrite {
        sync_generation: u32,
    },
    /// A chunk read to serve replica `to`: from our durable checkpoint, or (`previous`) from the
    /// one before it.
    SyncChunkRead {
        to: u8,
        previous: bool,
    },
}

/// The argument field's width.
const ARGUMENT_BITS: u32 = 24;

impl Purpose {
    /// The purpose's code and its argument.
    fn encode(self) -> (u8, u32) {
        match self {
            Purpose::SuperblockRead => (1, 0),
            Purpose::SuperblockWrite => (2, 0),
            Purpose::RecoveryHeaders => (3, 0),
            Purpose::RecoveryPrepare { whole } => (4, whole as u32),
            Purpose::PrepareWrite => (5, 0),
            Purpose::HeaderSectorWrite => (6, 0),
            Purpose::PrepareRead => (7, 0),
            Purpose::ClientReplyWrite => (8, 0),
            Purpose::CheckpointWrite => (9, 0),
            Purpose::CheckpointRead => (10, 0),
            Purpose::SyncChunkWrite { sync_generation } => (11, sync_generation),
            Purpose::SyncChunkRead { to, previous } => (12, to as u32 | (previous as u32) << 8),
        }
    }

    fn decode(code: u8, argument: u32) -> Purpose {
        let purpose = match code {
            1 => Purpose::SuperblockRead,
            2 => Purpose::SuperblockWrite,
            3 => Purpose::RecoveryHeaders,
            4 => Purpose::RecoveryPrepare {
                whole: argument == 1,
            },
            5 => Purpose::PrepareWrite,
            6 => Purpose::HeaderSectorWrite,
            7 => Purpose::PrepareRead,
            8 => Purpose::ClientReplyWrite,
            9 => Purpose::CheckpointWrite,
            10 => Purpose::CheckpointRead,
            11 => Purpose::SyncChunkWrite {
                sync_generation: argument,
            },
            12 => Purpose::SyncChunkRead {
                to: argument as u8,
                previous: argument >> 8 != 0,
            },
            _ => panic!("unknown i/o purpose {code}"),
        };
        // Tokens are only ever made here: any other argument is a bug, not an input.
        assert_eq!(purpose.encode(), (code, argument), "i/o token {purpose:?}");
        purpose
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub purpose: Purpose,
    pub index: u32,
}

impl Token {
    pub fn new(purpose: Purpose, index: u32) -> Token {
        let (_, argument) = purpose.encode();
        assert!(argument < (1 << ARGUMENT_BITS));
        Token { purpose, index }
    }

    pub fn encode(self) -> u64 {
        let (code, argument) = self.purpose.encode();
        ((code as u64) << 56) | ((argument as u64) << 32) | self.index as u64
    }

    pub fn decode(value: u64) -> Token {
        let argument = ((value >> 32) & ((1 << ARGUMENT_BITS) - 1)) as u32;
        Token {
            purpose: Purpose::decode((value >> 56) as u8, argument),
            index: value as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for purpose in [
            Purpose::PrepareRead,
            Purpose::RecoveryPrepare { whole: true },
            Purpose::SyncChunkWrite {
                sync_generation: 0xabcdef,
            },
            Purpose::SyncChunkRead {
                to: 5,
                previous: true,
            },
        ] {
            let t = Token::new(purpose, 0xdead_beef);
            assert_eq!(Token::decode(t.encode()), t);
        }
    }

    /// The encoding is the one tokens always had: purpose code, then the argument.
    #[test]
    fn layout() {
        let read = Token::new(
            Purpose::SyncChunkRead {
                to: 3,
                previous: true,
            },
            7,
        );
        assert_eq!(read.encode(), (12 << 56) | (0x103 << 32) | 7);
        let whole = Token::new(Purpose::RecoveryPrepare { whole: true }, 9);
        assert_eq!(whole.encode(), (4 << 56) | (1 << 32) | 9);
    }
}
