//! Rule conditions of the Lotus rule engine: parsing and evaluation, free of I/O.
//!
//! - [`sql`]: SQL-like statements (`SELECT ... FROM '<topic filter>' WHERE ...`) evaluated
//!   against device messages.
//! - [`scene`]: scene linkage, "property P crosses threshold Z and holds for T seconds",
//!   tracked per device.
//! - [`schedule`]: cron expressions evaluated in a time zone.

pub mod scene;
pub mod schedule;
pub mod sql;

pub use scene::{CompareOp, SceneCondition, SceneError, SceneScope, SceneTracker, SceneTransition};
pub use schedule::{Schedule, ScheduleError};
pub use sql::{ParseError, RuleInput, Statement};
