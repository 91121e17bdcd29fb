//! The process environment variables the optimizer sets for the libraries
//! under libtorch (OpenMP, MKL, numexpr, the MPS backend), never overriding
//! what the user set.

use parking_lot::Mutex;

use crate::json::Json;

/// Variables perfopt itself set in this process, with the values it set, so
/// that a second optimizer does not mistake them for the user's (unless the
/// user changed them since).
static SET_BY_PERFOPT: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetBy {
    /// Present before perfopt looked: left alone.
    User,
    /// Set now by this optimizer.
    Perfopt,
    /// Set earlier in this process by another optimizer.
    EarlierOptimizer,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EnvVarRecord {
    pub name: &'static str,
    pub value: String,
    pub set_by: SetBy,
    /// Whether the value can still take effect; false when the library that
    /// reads it has already read it (set too late).
    pub in_time: bool,
    pub note: Option<String>,
}

impl EnvVarRecord {
    pub fn to_json(&self) -> Json {
        let set_by = match self.set_by {
            SetBy::User => "user",
            SetBy::Perfopt => "perfopt",
            SetBy::EarlierOptimizer => "perfopt (earlier optimizer)",
        };
        Json::object()
            .with("name", self.name)
            .with("value", self.value.as_str())
            .with("set_by", set_by)
            .with("in_time", self.in_time)
            .with("note", self.note.clone())
    }
}

/// Sets `name=value` unless the variable is already set, and says who set it.
/// `in_time_if_set_now` is false for variables that their reader has already
/// consumed by the time perfopt runs.
pub fn set_unless_present(
    name: &'static str,
    value: &str,
    in_time_if_set_now: bool,
    note: Option<&str>,
) -> EnvVarRecord {
    let mut ours = SET_BY_PERFOPT.lock();
    let record = |value: String, set_by: SetBy, in_time: bool| EnvVarRecord {
        name,
        value,
        set_by,
        in_time,
        note: note.map(str::to_string),
    };
    if let Some(existing) = std::env::var_os(name) {
        let existing = existing.to_string_lossy().into_owned();
        let set_by = if ours.iter().any(|(n, v)| *n == name && *v == existing) {
            SetBy::EarlierOptimizer
        } else {
            SetBy::User
        };
        let in_time = set_by == SetBy::User || in_time_if_set_now;
        return record(existing, set_by, in_time);
    }
    // Setting the environment races with threads that read it through libc
    // (getenv is not synchronised); perfopt sets these once, at optimizer
    // creation, which is the documented time for a host to create one.
    std::env::set_var(name, value);
    ours.retain(|(n, _)| *n != name);
    ours.push((name, value.to_string()));
    record(value.to_string(), SetBy::Perfopt, in_time_if_set_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overrides_and_remembers_what_it_set() {
        std::env::set_var("PERFOPT_TEST_USER_VAR", "7");
        let user = set_unless_present("PERFOPT_TEST_USER_VAR", "1", true, None);
        assert_eq!(user.set_by, SetBy::User);
        assert_eq!(user.value, "7");
        assert_eq!(std::env::var("PERFOPT_TEST_USER_VAR").unwrap(), "7");

        let first = set_unless_present("PERFOPT_TEST_NEW_VAR", "1", false, Some("late"));
        assert_eq!(first.set_by, SetBy::Perfopt);
        assert!(!first.in_time);
        assert_eq!(std::env::var("PERFOPT_TEST_NEW_VAR").unwrap(), "1");
        let second = set_unless_present("PERFOPT_TEST_NEW_VAR", "2", false, None);
        assert_eq!(second.set_by, SetBy::EarlierOptimizer);
        assert_eq!(second.value, "1");
        std::env::set_var("PERFOPT_TEST_NEW_VAR", "5");
        let changed = set_unless_present("PERFOPT_TEST_NEW_VAR", "2", false, None);
        assert_eq!(changed.set_by, SetBy::User, "the user changed it since");
    }
}
