//! What the workers of one run share: the quarantine, `--strict`, the signal to stop, and the
//! problem or error that stopped the run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ConvertError, Problem};
use crate::dataset::quarantine::Quarantine;
use crate::sync::lock;

/// State the workers of one run share.
pub(super) struct RunState {
    pub(super) quarantine: Mutex<Quarantine>,
    pub(super) strict: bool,
    /// Set when the run must end early (strict problem or fatal error).
    stop: AtomicBool,
    first_problem: Mutex<Option<Problem>>,
    fatal: Mutex<Option<ConvertError>>,
}

impl RunState {
    pub(super) fn new(quarantine: Quarantine, strict: bool) -> RunState {
        RunState {
            quarantine: Mutex::new(quarantine),
            strict,
            stop: AtomicBool::new(false),
            first_problem: Mutex::new(None),
            fatal: Mutex::new(None),
        }
    }

    /// Ends the run with `error` (the first one wins).
    pub(super) fn fail(&self, error: ConvertError) {
        lock(&self.fatal).get_or_insert(error);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// With `--strict`, ends the run at its first problem (the first one reported wins).
    pub(super) fn problem(&self, problem: &Problem) {
        if self.strict {
            lock(&self.first_problem).get_or_insert_with(|| problem.clone());
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Ends the run early without an error (nobody reads its output any more).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the run must end early.
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The problem that ended the run under `--strict`, if one did.
    pub(super) fn strict_problem(&self) -> Option<Problem> {
        lock(&self.first_problem).clone()
    }

    /// The fatal error that ended the run, if one did (taken: asked once).
    pub(super) fn take_fatal(&self) -> Option<ConvertError> {
        lock(&self.fatal).take()
    }

    /// Why the run ended early, if it did: the strict problem first, then a fatal error; and
    /// the quarantine, to finish when it did not.
    pub(super) fn into_outcome(self) -> (Option<ConvertError>, Quarantine) {
        let quarantine = crate::sync::into_inner(self.quarantine);
        let stopped_by = match crate::sync::into_inner(self.first_problem) {
            Some(problem) => Some(ConvertError::Strict(problem)),
            None => crate::sync::into_inner(self.fatal),
        };
        (stopped_by, quarantine)
    }
}
