//! Shared by the socket-level tests: every target test runs on one reactor and on two.

use nvmf_target::TargetConfig;

/// One reactor (every connection on the owner) or two (connections alternate between
/// them: the commands of half of them cross to the owner and back through the reactors'
/// queues).
pub fn config(mask: u64) -> TargetConfig {
    TargetConfig {
        cpumask: mask,
        ..TargetConfig::default()
    }
}

/// Runs each `fn name(mask: u64)` listed as two tests: `one_reactor::name` (mask 0x1) and
/// `two_reactors::name` (mask 0x3).
macro_rules! on_reactors {
    ($($name:ident),* $(,)?) => {
        mod one_reactor {
            $(
                #[test]
                fn $name() {
                    super::$name(0x1)
                }
            )*
        }
        mod two_reactors {
            $(
                #[test]
                fn $name() {
                    super::$name(0x3)
                }
            )*
        }
    };
}
