//! The suite registry: maps a [`SuiteId`] from the wire to a plugin.

use crate::ids::SuiteId;
use crate::suite::{MAX_NONCE_LEN, Suite};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// A message names a suite that no registered plugin provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown cipher suite {0}")]
pub struct UnknownSuite(pub SuiteId);

/// A suite could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another suite already has this id.
    #[error("suite id {id} is already registered (to {existing:?})")]
    DuplicateId {
        /// The id.
        id: SuiteId,
        /// The name of the suite that holds it.
        existing: String,
    },
    /// The suite declares parameters Confidant cannot use safely.
    #[error("suite {id} is unusable: {reason}")]
    Unusable {
        /// The id.
        id: SuiteId,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Finds suites the registry itself does not hold, e.g. loaded on demand.
pub trait SuiteResolver: Send + Sync {
    /// The suite registered under `id`, if this resolver knows it.
    fn resolve(&self, id: SuiteId) -> Option<Arc<dyn Suite>>;
}

/// Maps suite ids to suites. Users register their own beside the project's.
///
/// ```
/// use confidant_core::{SuiteRegistry, SuiteId};
/// let registry = SuiteRegistry::new();
/// assert!(registry.get(SuiteId(1)).is_err());
/// ```
#[derive(Clone, Default)]
pub struct SuiteRegistry {
    suites: BTreeMap<SuiteId, Arc<dyn Suite>>,
    fallback: Option<Arc<dyn SuiteResolver>>,
}

impl SuiteRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `suite` under its id, refusing duplicates and suites whose
    /// declared sizes or limits are unusable.
    pub fn register(&mut self, suite: Arc<dyn Suite>) -> Result<(), RegistryError> {
        let id = suite.id();
        let unusable = |reason| Err(RegistryError::Unusable { id, reason });
        if suite.key_len() < 16 {
            return unusable("key shorter than 128 bits");
        }
        if suite.nonce_len() == 0 || suite.nonce_len() > MAX_NONCE_LEN {
            return unusable("nonce length outside 1..=32 bytes");
        }
        if suite.max_messages_per_key() == 0 {
            return unusable("the suite allows no message per key");
        }
        if let Some(existing) = self.suites.get(&id) {
            return Err(RegistryError::DuplicateId {
                id,
                existing: existing.name().to_owned(),
            });
        }
        self.suites.insert(id, suite);
        Ok(())
    }

    /// Consults `resolver` for ids that were not registered.
    pub fn set_fallback(&mut self, resolver: Arc<dyn SuiteResolver>) {
        self.fallback = Some(resolver);
    }

    /// The suite with this id.
    pub fn get(&self, id: SuiteId) -> Result<Arc<dyn Suite>, UnknownSuite> {
        if let Some(suite) = self.suites.get(&id) {
            return Ok(Arc::clone(suite));
        }
        self.fallback
            .as_ref()
            .and_then(|fallback| fallback.resolve(id))
            .filter(|suite| suite.id() == id)
            .ok_or(UnknownSuite(id))
    }

    /// The ids of the registered suites, in ascending order (the fallback's
    /// are not listed).
    pub fn ids(&self) -> Vec<SuiteId> {
        self.suites.keys().copied().collect()
    }
}

impl fmt::Debug for SuiteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.suites.iter().map(|(id, suite)| (id, suite.name())))
            .finish()
    }
}
