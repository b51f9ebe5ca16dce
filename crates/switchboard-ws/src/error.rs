//! Protocol violations by the peer, each with the close code it must receive.

use crate::close::CloseCode;

/// A rule of RFC 6455 / RFC 7692 the peer broke. The connection is failed
/// with [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("client frame is not masked")]
    UnmaskedFrame,
    #[error("control frame is fragmented")]
    FragmentedControl,
    #[error("control frame payload longer than 125 bytes")]
    ControlTooLong,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("payload length has the most significant bit set")]
    InvalidLength,
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    #[error("close code {0} is not allowed on the wire")]
    InvalidCloseCode(u16),
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("message larger than the limit of {limit} bytes")]
    MessageTooBig { limit: usize },
    #[error("compressed payload is corrupt: {0}")]
    Inflate(String),
}

impl ProtocolError {
    /// The close code RFC 6455 section 7.4.1 assigns to this violation.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::Inflate(_) => CloseCode::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
