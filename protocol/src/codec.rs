//! The bincode-format payload codec, kept private so that the encoding crate
//! can change without touching callers.

use wincode::config::DefaultConfig;
use wincode::{SchemaReadOwned, SchemaWrite};

use crate::ProtocolError;

pub(crate) fn encode<T>(msg: &T, out: &mut Vec<u8>, name: &'static str) -> Result<(), ProtocolError>
where
    T: SchemaWrite<DefaultConfig, Src = T>,
{
    wincode::serialize_into(out, msg).map_err(|e| ProtocolError::Encode {
        message: name,
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T>(payload: &[u8], name: &'static str) -> Result<T, ProtocolError>
where
    T: SchemaReadOwned<DefaultConfig, Dst = T>,
{
    let mut rest = payload;
    let msg = wincode::deserialize_from(&mut rest).map_err(|e| ProtocolError::Malformed {
        message: name,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes {
            message: name,
            trailing: rest.len(),
        });
    }
    Ok(msg)
}
