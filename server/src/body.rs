//! Reading request bodies within bounds: the declared length is checked first, the streamed
//! read is capped and timed, so a client can neither make us buffer more than
//! `MAX_BODY_BYTES` nor hold a request open by trickling bytes.

use crate::limits::{BODY_READ_TIMEOUT, MAX_BODY_BYTES};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderMap, CONTENT_LENGTH};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body was not received in time")]
    Timeout,
    #[error("the body could not be read")]
    Aborted,
}

pub async fn read<B>(headers: &HeaderMap, body: B) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        let length = length
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok())
            .ok_or(BodyError::Aborted)?;
        if length > MAX_BODY_BYTES as u64 {
            return Err(BodyError::TooLarge);
        }
    }
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| BodyError::Timeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Aborted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::header::HeaderValue;

    #[tokio::test]
    async fn bodies_are_bounded() {
        let mut headers = HeaderMap::new();
        let ok = read(&headers, Full::new(Bytes::from(vec![b'a'; MAX_BODY_BYTES]))).await;
        assert_eq!(ok.map(|b| b.len()), Ok(MAX_BODY_BYTES));
        let big = read(
            &headers,
            Full::new(Bytes::from(vec![b'a'; MAX_BODY_BYTES + 1])),
        )
        .await;
        assert_eq!(big, Err(BodyError::TooLarge));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1000000"));
        let declared = read(&headers, Full::new(Bytes::new())).await;
        assert_eq!(declared, Err(BodyError::TooLarge));
    }
}
