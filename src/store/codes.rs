//! The numbers that stand for key types and statuses in every store
//! (the embedded store's values, Cassandra's `tinyint` columns). Part of
//! both formats: never renumber.

use crate::event::KeyType;
use crate::row::Status;

pub fn key_type_code(key_type: KeyType) -> u8 {
    match key_type {
        KeyType::Ad => 0,
        KeyType::Campaign => 1,
        KeyType::Advertiser => 2,
    }
}

pub fn key_type_of(code: u8) -> Option<KeyType> {
    match code {
        0 => Some(KeyType::Ad),
        1 => Some(KeyType::Campaign),
        2 => Some(KeyType::Advertiser),
        _ => None,
    }
}

pub fn status_code(status: Status) -> u8 {
    match status {
        Status::Partial => 0,
        Status::Final => 1,
        Status::Restated => 2,
    }
}

pub fn status_of(code: u8) -> Option<Status> {
    match code {
        0 => Some(Status::Partial),
        1 => Some(Status::Final),
        2 => Some(Status::Restated),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for key_type in [KeyType::Ad, KeyType::Campaign, KeyType::Advertiser] {
            assert_eq!(key_type_of(key_type_code(key_type)), Some(key_type));
        }
        for status in [Status::Partial, Status::Final, Status::Restated] {
            assert_eq!(status_of(status_code(status)), Some(status));
        }
        assert_eq!(key_type_of(3), None);
        assert_eq!(status_of(3), None);
    }
}
