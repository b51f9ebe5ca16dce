//! The message object: `{"channel","offset","username","msg","time"}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

/// One stored chat message, as every transport and API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub channel: String,
    /// Position in the channel: 1, 2, 3… with no gaps.
    pub offset: u64,
    pub username: String,
    pub msg: String,
    /// Server time of the write, in milliseconds since the Unix epoch;
    /// written as RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339_millis", deserialize_with = "from_rfc3339")]
    pub time: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-11-21T10:00:00.123Z`.
pub fn format_time(millis: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

pub(crate) fn rfc3339_millis<S: Serializer>(millis: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(
        UNIX_EPOCH + Duration::from_millis(*millis),
    ))
}

fn from_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    let time = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
    Ok(time
        .duration_since(UNIX_EPOCH)
        .map_err(serde::de::Error::custom)?
        .as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_documented_object() {
        let p = Publication {
            channel: "lobby".into(),
            offset: 42,
            username: "alice".into(),
            msg: "hi".into(),
            time: 1_795_255_200_123,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"channel":"lobby","offset":42,"username":"alice","msg":"hi","time":"2026-11-21T10:00:00.123Z"}"#
        );
        assert_eq!(serde_json::from_str::<Publication>(&json).unwrap(), p);
    }
}
