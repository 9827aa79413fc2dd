//! The exit codes of `nurtured`, one meaning each, so scripts and service managers can
//! tell a mistake to fix (2) from a run that failed (1). docs/cli.md lists them.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// The command ran and failed: the database, a file or the network failed, or what
    /// it read or checked has problems (bad lines, rule or template errors found by
    /// `check`, failing fixtures, a lead that does not exist).
    Failed = 1,
    /// Nothing was done because the command cannot start as given: the command line,
    /// a flag's value, the configuration, or the rules or templates it needs (they do
    /// not compile). Fix the input and run it again.
    Usage = 2,
    /// Done in part: `import` took the good rows and refused some.
    Partial = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The exit code for an error that ended a command: a mistake in the setup (rules or
/// templates that do not compile, real mail with the shipped secret) is [`Exit::Usage`],
/// anything else [`Exit::Failed`].
pub fn of_error(error: &anyhow::Error) -> Exit {
    use crate::daemon::StartError;
    let setup = error.chain().any(|cause| {
        cause.downcast_ref::<SetupError>().is_some()
            || matches!(
                cause.downcast_ref::<StartError>(),
                Some(StartError::Rules(_) | StartError::Templates(_))
            )
    });
    if setup { Exit::Usage } else { Exit::Failed }
}

/// A configuration that loads but cannot be used for this command (for example real
/// mail with the shipped development secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_mistakes_are_usage_errors_and_the_rest_failures() {
        let rules = anyhow::Error::from(crate::daemon::StartError::Rules(Vec::new()));
        assert_eq!(of_error(&rules), Exit::Usage);
        let secret = anyhow::Error::from(SetupError("mail.secret".into()));
        assert_eq!(of_error(&secret.context("starting")), Exit::Usage);
        let io = anyhow::Error::from(std::io::Error::other("disk full"));
        assert_eq!(of_error(&io), Exit::Failed);
        assert_eq!(Exit::Partial as u8, 3);
    }
}
