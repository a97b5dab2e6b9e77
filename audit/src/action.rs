//! What a record is about: the closed set of actions perry-sandbox records.
//!
//! Writers name an [`Action`], never a free string, so a reviewer's `audit show --action run`
//! cannot miss records spelled `Run` or `exec` by one caller. Records read back from a log keep
//! the name as written (a log is data; an unknown name is shown, not refused).

use std::fmt;

macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// An action a record is about.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Action {
            $( $(#[$doc])* $variant, )*
        }

        impl Action {
            /// Every action, in table order.
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];

            /// The name written in the log's `action` field.
            pub fn as_str(self) -> &'static str {
                match self { $(Action::$variant => $name,)* }
            }
        }
    };
}

actions! {
    /// A configuration was loaded (which file, its digest, how it was found).
    ConfigLoad = "config_load",
    /// An image was verified or refused.
    Verify = "verify",
    /// `perry-sandbox run` was allowed or refused.
    Run = "run",
    /// A shell capability invocation was allowed or refused.
    Capability = "capability",
    /// What an allowed run or invocation did: exit, resources, denied syscalls.
    Outcome = "outcome",
    /// A caller of the local API was refused.
    ApiAccess = "api_access",
    /// The local API service started or stopped.
    Serve = "serve",
    /// A compose or workload plan was verified and allowed, or refused (nothing created).
    Plan = "plan",
    /// The executor (verifier, trusted root, image store) could not be set up.
    Setup = "setup",
    /// A compose or workload resource (container, network, volume) is about to be created,
    /// reused, or was replaced: written before the act.
    Create = "create",
    /// A healthcheck or completion verdict on a service, as our own runner measured it.
    Health = "health",
    /// One step of undoing a failed `up`: a resource removed, or the final listing proving
    /// that nothing is left.
    Rollback = "rollback",
    /// `compose up` finished: everything started (allow) or it failed and was rolled back (deny).
    Up = "up",
    /// `compose down`, `stop` or `restart`: what was stopped and removed.
    Down = "down",
    /// A test or tool record (benchmarks, fixtures).
    Test = "test",
}

impl Action {
    /// The action with this log name.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
