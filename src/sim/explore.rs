//! Running a check over many seeds and reporting the first that fails, with what replays it.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use crate::error::plural;

/// The first seed whose check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExploreFailure {
    /// The seed: run the same check with it to replay the failure exactly.
    pub seed: u64,
    /// Seeds that passed before it.
    pub passed: u64,
    /// What the check said (its error, or its panic message).
    pub message: String,
}

impl fmt::Display for ExploreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed after {}: {}\nreplay it: SIM_SEED={} (explore then runs only that \
             seed), or call the check with seed {}",
            self.seed,
            plural(self.passed, "passing seed"),
            self.message,
            self.seed,
            self.seed
        )
    }
}

impl std::error::Error for ExploreFailure {}

/// Runs `check` on every seed of `seeds`, in order, and stops at the first that fails (returns
/// an error or panics). Returns how many seeds passed.
///
/// With the environment variable `SIM_SEED` set, only that seed runs: the way to replay a
/// failure this reported.
///
/// ```
/// use chandy_lamport::sim::explore;
/// let passed = explore(0..100, |seed| if seed < 1000 { Ok(()) } else { Err("too big") });
/// # if std::env::var("SIM_SEED").is_err() {
/// assert_eq!(passed, Ok(100));
/// # }
/// let failure = explore(0..100, |seed| if seed != 42 { Ok(()) } else { Err("42") }).unwrap_err();
/// # if std::env::var("SIM_SEED").is_err() {
/// assert_eq!((failure.seed, failure.passed), (42, 42));
/// # }
/// ```
pub fn explore<E: fmt::Display>(
    seeds: impl IntoIterator<Item = u64>,
    mut check: impl FnMut(u64) -> Result<(), E>,
) -> Result<u64, ExploreFailure> {
    let only = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok());
    let mut passed = 0;
    for seed in seeds.into_iter().filter(|s| only.is_none_or(|o| o == *s)) {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(seed)));
        let message = match outcome {
            Ok(Ok(())) => {
                passed += 1;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(payload) => crate::process::panic_message(&*payload),
        };
        return Err(ExploreFailure {
            seed,
            passed,
            message,
        });
    }
    if let Some(seed) = only {
        if passed == 0 {
            return Err(ExploreFailure {
                seed,
                passed,
                message: "SIM_SEED is not among the seeds explored".to_string(),
            });
        }
    }
    Ok(passed)
}
