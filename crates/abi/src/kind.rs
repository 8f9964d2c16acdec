//! Coroutine kinds.

use core::fmt;

/// What a coroutine is for (paper §2.1: "SharedScheduler will process the
/// coroutine differently according to the task type").
///
/// The kind is fixed at spawn. The scheduler core treats every kind alike when it
/// picks the next coroutine (priority alone decides); kinds let the platform and
/// tools tell coroutines apart, and let the kernel find its switching coroutines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[repr(u8)]
pub enum CoroutineKind {
    /// An ordinary coroutine spawned by application code.
    #[default]
    Normal = 0,
    /// The main coroutine: `main` wrapped into a coroutine (paper §3.1).
    Main = 1,
    /// A kernel coroutine carrying out an asynchronous system call (paper §3.2).
    Syscall = 2,
    /// The per-CPU switching coroutine, whose priority follows the most important
    /// ready process and which switches to it (paper §2.4).
    Switching = 3,
}

impl CoroutineKind {
    /// Every kind, in ABI order.
    pub const ALL: [CoroutineKind; 4] = [
        CoroutineKind::Normal,
        CoroutineKind::Main,
        CoroutineKind::Syscall,
        CoroutineKind::Switching,
    ];
}

/// A raw kind number that names no [`CoroutineKind`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidKind(pub u8);

impl core::error::Error for InvalidKind {}

impl fmt::Display for InvalidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coroutine kind {} is unknown; use 0 (normal), 1 (main), 2 (syscall) or 3 (switching)",
            self.0
        )
    }
}

impl TryFrom<u8> for CoroutineKind {
    type Error = InvalidKind;

    fn try_from(raw: u8) -> Result<Self, InvalidKind> {
        CoroutineKind::ALL
            .get(usize::from(raw))
            .copied()
            .ok_or(InvalidKind(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reject() {
        for kind in CoroutineKind::ALL {
            assert_eq!(CoroutineKind::try_from(kind as u8), Ok(kind));
        }
        assert_eq!(CoroutineKind::try_from(4), Err(InvalidKind(4)));
        assert_eq!(CoroutineKind::try_from(255), Err(InvalidKind(255)));
    }
}
