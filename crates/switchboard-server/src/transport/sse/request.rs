//! What `GET /sse` asks for: channels, a user, and where to resume.

use http::{HeaderMap, StatusCode};
use switchboard_core::{ChannelName, Username};
use switchboard_proto::sse::Cursor;

use crate::error::ApiError;

/// The error code of a stream over `--max-subscriptions` channels.
pub const TOO_MANY_CHANNELS: &str = "too_many_subscriptions";

/// What `GET /sse` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRequest {
    pub channels: Vec<ChannelName>,
    pub user: Option<Username>,
    pub since: Option<Cursor>,
    /// `?token=` (`--auth token`; ignored otherwise).
    pub token: Option<String>,
}

impl StreamRequest {
    /// Reads the query string and the `Last-Event-ID` header (which wins
    /// over `?since=`: it is what `EventSource` sends when it reconnects to
    /// the same URL). A stream follows at most `max_channels`
    /// (`--max-subscriptions`, as a connection's subscriptions).
    pub fn parse(
        query: &str,
        headers: &HeaderMap,
        max_channels: usize,
    ) -> Result<StreamRequest, ApiError> {
        let mut channels: Vec<ChannelName> = Vec::new();
        let mut user = None;
        let mut since = None;
        let mut token = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "channel" => {
                    let channel = ChannelName::parse(&value).map_err(|e| {
                        ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string())
                    })?;
                    if !channels.contains(&channel) {
                        channels.push(channel);
                    }
                }
                "user" if !value.is_empty() => {
                    let name = Username::parse(&value).map_err(|e| {
                        ApiError::new(StatusCode::BAD_REQUEST, "invalid_username", e.to_string())
                    })?;
                    user = Some(name);
                }
                "user" => {}
                "since" => since = Some(parse_cursor(&value)?),
                "token" => token = Some(value.into_owned()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {other:?}: expected channel, user, since, token"
                    )));
                }
            }
        }
        if channels.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_channel",
                "name at least one channel: /sse?channel=NAME",
            ));
        }
        if channels.len() > max_channels {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                TOO_MANY_CHANNELS,
                format!(
                    "{} channels; one stream follows at most {max_channels} (--max-subscriptions)",
                    channels.len()
                ),
            ));
        }
        if let Some(last) = headers.get("last-event-id") {
            let last = last
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?;
            if !last.trim().is_empty() {
                since = Some(parse_cursor(last)?);
            }
        }
        Ok(StreamRequest {
            channels,
            user,
            since,
            token,
        })
    }
}

fn parse_cursor(text: &str) -> Result<Cursor, ApiError> {
    Cursor::parse(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event_id", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(query: &str, last_event_id: Option<&str>) -> Result<StreamRequest, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", HeaderValue::from_str(id).unwrap());
        }
        StreamRequest::parse(query, &headers, 100)
    }

    #[test]
    fn channels_user_and_since_come_from_the_query() {
        let parsed = request(
            "channel=lobby&channel=ops&channel=lobby&user=ann&since=4",
            None,
        )
        .unwrap();
        let names: Vec<_> = parsed.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["lobby", "ops"]);
        assert_eq!(parsed.user.unwrap().as_str(), "ann");
        assert_eq!(parsed.since, Some(Cursor::All(4)));
    }

    #[test]
    fn last_event_id_wins_over_since() {
        let parsed = request("channel=lobby&since=4", Some("9")).unwrap();
        assert_eq!(parsed.since, Some(Cursor::All(9)));
        let parsed = request("channel=a&channel=b", Some("a:3,b:5")).unwrap();
        let cursor = parsed.since.unwrap();
        assert_eq!(
            (cursor.offset_for("a"), cursor.offset_for("b")),
            (Some(3), Some(5))
        );
    }

    #[test]
    fn bad_requests_name_their_problem() {
        let code = |query: &str, id: Option<&str>| request(query, id).unwrap_err().code;
        assert_eq!(code("", None), "missing_channel");
        assert_eq!(code("channel=no%20spaces", None), "invalid_channel");
        assert_eq!(code("channel=a&user=%01", None), "invalid_username");
        assert_eq!(code("channel=a&since=x", None), "invalid_event_id");
        assert_eq!(code("channel=a", Some("nope")), "invalid_event_id");
        assert_eq!(code("channel=a&colour=red", None), "bad_request");
    }
}
