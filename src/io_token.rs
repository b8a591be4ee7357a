//! I/O tokens: a completion carries a u64 saying what it is for, so the replica can route it
//! without callbacks. Layout: [purpose:8][aux:24][index:32].

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    SuperblockRead = 1,
    SuperblockWrite = 2,
    RecoveryHeaders = 3,
    RecoveryPrepare = 4,
    PrepareWrite = 5,
    HeaderSectorWrite = 6,
    PrepareRead = 7,
    ClientReplyWrite = 8,
    CheckpointWrite = 9,
    CheckpointRead = 10,
    SyncChunkWrite = 11,
    SyncChunkRead = 12,
}

impl Purpose {
    fn from_u8(value: u8) -> Purpose {
        match value {
            1 => Purpose::SuperblockRead,
            2 => Purpose::SuperblockWrite,
            3 => Purpose::RecoveryHeaders,
            4 => Purpose::RecoveryPrepare,
            5 => Purpose::PrepareWrite,
            6 => Purpose::HeaderSectorWrite,
            7 => Purpose::PrepareRead,
            8 => Purpose::ClientReplyWrite,
            9 => Purpose::CheckpointWrite,
            10 => Purpose::CheckpointRead,
            11 => Purpose::SyncChunkWrite,
            12 => Purpose::SyncChunkRead,
            _ => panic!("unknown i/o purpose {value}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub purpose: Purpose,
    pub aux: u32,
    pub index: u32,
}

impl Token {
    pub fn new(purpose: Purpose, aux: u32, index: u32) -> Token {
        assert!(aux < (1 << 24));
        Token {
            purpose,
            aux,
            index,
        }
    }

    pub fn encode(self) -> u64 {
        ((self.purpose as u64) << 56) | ((self.aux as u64) << 32) | self.index as u64
    }

    pub fn decode(value: u64) -> Token {
        Token {
            purpose: Purpose::from_u8((value >> 56) as u8),
            aux: ((value >> 32) & 0xff_ffff) as u32,
            index: value as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = Token::new(Purpose::PrepareRead, 0xabcdef, 0xdead_beef);
        assert_eq!(Token::decode(t.encode()), t);
    }
}
