//! One line for an error and its causes.

/// `error: cause: cause`, leaving out a cause whose text the line already holds (many errors
/// print their source in their own text; following `source()` blindly says it twice).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        cause = c.source();
    }
    text
}

/// The message a panic carried (`panic!` with a literal or a formatted string), for the
/// places that turn a panic of one item's work into that item's error.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod tests {
    use super::{error_chain, panic_message};

    #[test]
    fn panic_messages_of_both_kinds_are_read() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "plain");
        let n = 3;
        let formatted = std::panic::catch_unwind(|| panic!("item {n}")).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "item 3");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("a symbolic link to nothing");
        let typed = crate::checkpoint::CheckpointError::io(std::path::Path::new("m"), io);
        assert_eq!(
            error_chain(&typed),
            "m: cannot read: a symbolic link to nothing"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("loading the model")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other("truncated"));
        assert_eq!(error_chain(&outer), "loading the model: truncated");
    }
}
