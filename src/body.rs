//! Bodies on their way through: read ahead up to a bound, so that a body that breaks, stalls
//! or grows past its limit is answered with one clear status (400, 408, 413, 502, 504) before
//! anything is passed on; past the bound, streamed with the same idle timeout and size cap.
//!
//! Requests: the upstream sees a request only once its body (up to the bound) arrived intact.
//! Responses: the client sees a status only once the upstream's body (up to the bound) did; a
//! longer body that fails mid-stream ends the client's connection (HTTP/1.1) or stream
//! (HTTP/2) without a clean end, so it can never pass for a complete answer.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no body data for {0:?}")]
    Idle(Duration),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("body broken: {0}")]
    Broken(Box<dyn StdError + Send + Sync>),
}

/// What kind of failure a [`BodyError`] is, without its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    Idle,
    TooLarge,
    Broken,
}

impl BodyError {
    pub fn fault(&self) -> BodyFault {
        match self {
            BodyError::Idle(_) => BodyFault::Idle,
            BodyError::TooLarge(_) => BodyFault::TooLarge,
            BodyError::Broken(_) => BodyFault::Broken,
        }
    }
}

/// A body read ahead: complete when it fitted the bound, otherwise what was read and the rest.
#[derive(Debug)]
pub struct Relayed<B> {
    state: State<B>,
}

#[derive(Debug)]
enum State<B> {
    Complete {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Streaming {
        prefix: Option<Bytes>,
        rest: B,
        idle: Duration,
        timer: Pin<Box<Sleep>>,
        /// Bytes the rest may still bring.
        allowance: u64,
        failures: Option<prometheus::IntCounter>,
    },
}

impl<B> Relayed<B> {
    /// An empty, complete body.
    pub fn empty() -> Relayed<B> {
        Relayed {
            state: State::Complete {
                data: None,
                trailers: None,
            },
        }
    }

    /// Still streaming from its source (it did not fit the read-ahead bound).
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming { .. })
    }

    /// The bytes of a complete body (`None` when empty or still streaming).
    pub fn complete_data(&self) -> Option<&Bytes> {
        match &self.state {
            State::Complete { data, .. } => data.as_ref(),
            State::Streaming { .. } => None,
        }
    }

    /// Counts a failure of the streamed remainder in `counter`.
    pub fn count_failures(mut self, counter: prometheus::IntCounter) -> Relayed<B> {
        if let State::Streaming { failures, .. } = &mut self.state {
            *failures = Some(counter);
        }
        self
    }
}

/// Reads `body` until it ends or holds more than `bound` bytes, waiting at most `idle` for each
/// piece; more than `max` bytes in all is an error, now or later.
pub async fn read_ahead<B>(
    mut body: B,
    bound: usize,
    max: u64,
    idle: Duration,
) -> Result<Relayed<B>, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut read = Collected::default();
    let mut trailers = None;
    while !body.is_end_stream() {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyError::Idle(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.into())),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                read.push(data);
                if read.len > max {
                    return Err(BodyError::TooLarge(max));
                }
                if read.len > bound as u64 {
                    return Ok(Relayed {
                        state: State::Streaming {
                            allowance: max - read.len,
                            prefix: read.into_bytes(),
                            rest: body,
                            idle,
                            timer: Box::pin(tokio::time::sleep(idle)),
                            failures: None,
                        },
                    });
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                    break;
                }
            }
        }
    }
    if let Some(short) = short_of_length(&body) {
        return Err(short);
    }
    Ok(Relayed {
        state: State::Complete {
            data: read.into_bytes(),
            trailers,
        },
    })
}

/// A body that ended while its own size hint still promised bytes: a declared
/// `content-length` not reached. hyper reports an HTTP/2 stream reset with `NO_ERROR` as the
/// end of the body (RFC 9113 8.1 lets a server stop a request that way, but a client that does
/// it has sent only part of its request), so a body cut off that way looks whole but for this.
fn short_of_length<B: Body>(body: &B) -> Option<BodyError> {
    let missing = body.size_hint().lower();
    (missing > 0)
        .then(|| BodyError::Broken(format!("ended {missing} bytes short of its length").into()))
}

/// Data read so far: one chunk kept as is, several copied into one buffer.
#[derive(Default)]
struct Collected {
    first: Option<Bytes>,
    more: Option<BytesMut>,
    len: u64,
}

impl Collected {
    fn push(&mut self, data: Bytes) {
        self.len += data.len() as u64;
        if data.is_empty() {
            return;
        }
        match (&mut self.more, self.first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, None) => self.first = Some(data),
            (None, Some(first)) => {
                let mut buf = BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                self.more = Some(buf);
            }
        }
    }

    fn into_bytes(self) -> Option<Bytes> {
        match (self.more, self.first) {
            (Some(buf), _) => Some(buf.freeze()),
            (None, first) => first,
        }
    }
}

impl<B> Body for Relayed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().state {
            State::Complete { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            State::Streaming {
                prefix,
                rest,
                idle,
                timer,
                allowance,
                failures,
            } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let failed = |e: BodyError, failures: &Option<prometheus::IntCounter>| {
                    if let Some(c) = failures {
                        c.inc();
                    }
                    Poll::Ready(Some(Err(e)))
                };
                match Pin::new(&mut *rest).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let n = data.len() as u64;
                            if n > *allowance {
                                return failed(BodyError::TooLarge(n), failures);
                            }
                            *allowance -= n;
                        }
                        timer.as_mut().reset(Instant::now() + *idle);
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => failed(BodyError::Broken(e.into()), failures),
                    Poll::Ready(None) => match short_of_length(&*rest) {
                        Some(short) => failed(short, failures),
                        None => Poll::Ready(None),
                    },
                    Poll::Pending => {
                        ready!(timer.as_mut().poll(cx));
                        failed(BodyError::Idle(*idle), failures)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Complete { data, trailers } => data.is_none() && trailers.is_none(),
            // Not over while the size hint says more is due: polled, it ends as an error.
            State::Streaming { prefix, rest, .. } => {
                prefix.is_none() && rest.is_end_stream() && rest.size_hint().lower() == 0
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Complete { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            State::Streaming { prefix, rest, .. } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower() + extra);
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper + extra);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use super::*;
    use http_body_util::Full;

    /// Data frames, then the end, or nothing ever again (`stall`); `declared` bytes promised
    /// by its size hint (as hyper's for a `content-length`), counted down as data goes out.
    struct Chunks {
        parts: VecDeque<Bytes>,
        stall: bool,
        declared: Option<u64>,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.parts.pop_front() {
                Some(p) => {
                    if let Some(left) = &mut self.declared {
                        *left = left.saturating_sub(p.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(p))))
                }
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.parts.is_empty() && !self.stall
        }

        fn size_hint(&self) -> SizeHint {
            self.declared
                .map_or_else(SizeHint::new, SizeHint::with_exact)
        }
    }

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks {
            parts: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            stall: false,
            declared: None,
        }
    }

    const IDLE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn small_bodies_are_read_whole_and_sized_exactly() {
        let relayed = read_ahead(chunks(&["ab", "cd"]), 16, 100, IDLE)
            .await
            .unwrap();
        assert!(!relayed.is_streaming());
        assert_eq!(relayed.size_hint().exact(), Some(4));
        let bytes = relayed.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcd");

        let empty = read_ahead(Full::new(Bytes::new()), 16, 100, IDLE)
            .await
            .unwrap();
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn large_bodies_stream_with_what_was_read_first() {
        let relayed = read_ahead(chunks(&["abc", "def", "ghi"]), 4, 100, IDLE)
            .await
            .unwrap();
        assert!(relayed.is_streaming());
        let bytes = relayed.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcdefghi");
    }

    #[tokio::test]
    async fn the_size_cap_holds_before_and_after_the_bound() {
        let early = read_ahead(chunks(&["abcdef"]), 16, 4, IDLE).await;
        assert!(matches!(early, Err(BodyError::TooLarge(4))));
        let late = read_ahead(chunks(&["abc", "def", "ghi"]), 4, 7, IDLE)
            .await
            .unwrap();
        assert!(matches!(late.collect().await, Err(BodyError::TooLarge(_))));
    }

    #[tokio::test]
    async fn a_stall_is_an_error_before_and_after_the_bound() {
        let mut stalled = chunks(&["ab"]);
        stalled.stall = true;
        assert!(matches!(
            read_ahead(stalled, 16, 100, IDLE).await,
            Err(BodyError::Idle(_))
        ));
        let mut stalled = chunks(&["abc", "def"]);
        stalled.stall = true;
        let counter = prometheus::IntCounter::new("t", "t").unwrap();
        let relayed = read_ahead(stalled, 4, 100, IDLE)
            .await
            .unwrap()
            .count_failures(counter.clone());
        assert!(matches!(relayed.collect().await, Err(BodyError::Idle(_))));
        assert_eq!(counter.get(), 1);
    }

    /// A body that ends before its declared length (hyper's reading of an HTTP/2 reset with
    /// NO_ERROR) is broken, not complete: whether it fit the bound or was already streaming.
    #[tokio::test]
    async fn a_body_ending_short_of_its_length_is_broken() {
        let mut short = chunks(&["abcde"]);
        short.declared = Some(10);
        assert!(matches!(
            read_ahead(short, 16, 100, IDLE).await,
            Err(BodyError::Broken(_))
        ));
        let mut short = chunks(&["abc", "def"]);
        short.declared = Some(10);
        let relayed = read_ahead(short, 4, 100, IDLE).await.unwrap();
        assert!(relayed.is_streaming());
        assert!(matches!(relayed.collect().await, Err(BodyError::Broken(_))));
        // Exactly its length: complete, both ways.
        let mut whole = chunks(&["abcde"]);
        whole.declared = Some(5);
        assert!(read_ahead(whole, 16, 100, IDLE).await.is_ok());
        let mut whole = chunks(&["abc", "def"]);
        whole.declared = Some(6);
        let relayed = read_ahead(whole, 4, 100, IDLE).await.unwrap();
        assert_eq!(&relayed.collect().await.unwrap().to_bytes()[..], b"abcdef");
    }
}
