//! One line from an error and its causes: what the worker prints before it
//! exits, and the message a client or the supervisor reads when a request or a
//! load fails. Our errors keep their cause in `source()` and out of their own
//! message, so the message alone would lose it.

use std::error::Error;

/// `e` and each of its causes, joined by `": "`.
///
/// A cause whose text already ends the line is left out: some libraries
/// (`image`, for one) print their cause in their own message as well, and
/// the line should say it once.
pub fn error_chain(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = inner.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Leaf(&'static str);

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Wrap {
        text: &'static str,
        #[source]
        source: Leaf,
    }

    #[test]
    fn causes_follow_once() {
        let e = Wrap {
            text: "cannot read the reply",
            source: Leaf("broken pipe"),
        };
        assert_eq!(error_chain(&e), "cannot read the reply: broken pipe");
        let repeats = Wrap {
            text: "format error: broken pipe",
            source: Leaf("broken pipe"),
        };
        assert_eq!(error_chain(&repeats), "format error: broken pipe");
    }
}
