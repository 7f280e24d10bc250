//! Errors of the browser holder. Each has a [`ErrorKind`]; in a page it is
//! thrown as a JavaScript `Error` whose `kind` property is the kind's name
//! (`"invitation"`, `"connector"`, …) and whose `message` says what
//! happened. Nothing here carries a secret.

/// What went wrong, as the page can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The invitation text is not one (damaged, another version, a bad
    /// identity key), or was accepted already.
    Invitation,
    /// The connector refused a call or could not be reached.
    Connector,
    /// IndexedDB failed, or holds records this build cannot read.
    Storage,
    /// The engine refused the request (unknown connection, not
    /// established yet, busy, a session that must be reset).
    Protocol,
    /// The browser gave no randomness, or the page misused the API.
    Environment,
    /// A bug: an invariant did not hold.
    Internal,
}

impl ErrorKind {
    /// The kind's name, as the `kind` property of a thrown error.
    pub fn name(self) -> &'static str {
        match self {
            Self::Invitation => "invitation",
            Self::Connector => "connector",
            Self::Storage => "storage",
            Self::Protocol => "protocol",
            Self::Environment => "environment",
            Self::Internal => "internal",
        }
    }
}

/// An error of the browser holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WebError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Said for a person.
    pub message: String,
}

impl WebError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<confidant_store::StoreError> for WebError {
    fn from(error: confidant_store::StoreError) -> Self {
        Self::new(ErrorKind::Storage, error.to_string())
    }
}

impl From<confidant_engine::EngineError> for WebError {
    fn from(error: confidant_engine::EngineError) -> Self {
        Self::new(ErrorKind::Protocol, error.to_string())
    }
}

impl From<crate::invitation::InvitationError> for WebError {
    fn from(error: crate::invitation::InvitationError) -> Self {
        Self::new(ErrorKind::Invitation, error.to_string())
    }
}

#[cfg(target_arch = "wasm32")]
impl From<WebError> for wasm_bindgen::JsValue {
    fn from(error: WebError) -> Self {
        let thrown = js_sys::Error::new(&error.message);
        // Setting a property on a fresh Error cannot fail.
        let _ = js_sys::Reflect::set(
            &thrown,
            &wasm_bindgen::JsValue::from_str("kind"),
            &wasm_bindgen::JsValue::from_str(error.kind.name()),
        );
        thrown.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names_and_errors_say_what_happened() {
        let kinds = [
            ErrorKind::Invitation,
            ErrorKind::Connector,
            ErrorKind::Storage,
            ErrorKind::Protocol,
            ErrorKind::Environment,
            ErrorKind::Internal,
        ];
        let names: std::collections::BTreeSet<_> = kinds.iter().map(|kind| kind.name()).collect();
        assert_eq!(names.len(), kinds.len());
        let error = WebError::from(confidant_store::StoreError::Inconsistent("x"));
        assert_eq!(error.kind, ErrorKind::Storage);
        assert!(error.to_string().contains('x'));
    }
}
