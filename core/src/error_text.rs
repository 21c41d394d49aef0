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

#[cfg(test)]
mod tests {
    use super::error_chain;

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
