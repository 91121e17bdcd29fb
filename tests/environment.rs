//! TRANSLATOR_* variables read from the real process environment through
//! the C ABI. In its own test binary (its own process) because it changes
//! the environment; one test so that nothing runs beside it.

use std::ffi::CStr;
use std::ptr;

use perfopt::ffi::library::perfopt_last_error;
use perfopt::ffi::optimizer::*;
use perfopt::ffi::status::perfopt_status::*;
use perfopt::ffi::types::*;

fn report(optimizer: *const perfopt_optimizer) -> String {
    let mut needed = 0usize;
    let _ = perfopt_optimizer_report(optimizer, ptr::null_mut(), 0, &mut needed);
    // Reports are made fresh on each call: leave room for a changed figure.
    let mut buf = vec![0 as std::ffi::c_char; needed + 256];
    assert_eq!(
        perfopt_optimizer_report(optimizer, buf.as_mut_ptr(), buf.len(), &mut needed),
        PERFOPT_OK
    );
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn translator_variables_are_read_and_checked() {
    let mut optimizer = ptr::null_mut();

    std::env::set_var("TRANSLATOR_CPU_OPTIMIZATION", "perhaps");
    assert_eq!(
        perfopt_optimizer_new(ptr::null(), &mut optimizer),
        PERFOPT_ERR_ENVIRONMENT
    );
    let message = unsafe { CStr::from_ptr(perfopt_last_error()) }
        .to_str()
        .unwrap();
    assert!(message.contains("TRANSLATOR_CPU_OPTIMIZATION"), "{message}");
    assert!(message.contains("accepted"), "{message}");

    // The same config with the environment switched off ignores it.
    let mut config = perfopt_config::default();
    let _ = perfopt_config_default(&mut config);
    config.read_environment = 0;
    config.cpu_optimization = 0; // sets no variables, so the next optimizer does
    assert_eq!(perfopt_optimizer_new(&config, &mut optimizer), PERFOPT_OK);
    perfopt_optimizer_free(optimizer);

    std::env::set_var("TRANSLATOR_CPU_OPTIMIZATION", "true");
    std::env::set_var("TRANSLATOR_COMPILE_MODE", "default");
    std::env::set_var("TRANSLATOR_TORCH_COMPILE", "false");
    std::env::set_var("OMP_NUM_THREADS", "1");
    assert_eq!(
        perfopt_optimizer_new(ptr::null(), &mut optimizer),
        PERFOPT_OK
    );
    let text = report(optimizer);
    assert!(
        text.contains(r#""mode":"default","mode_source":"environment","effective_mode":"none""#),
        "{text}"
    );
    // The user's OMP_NUM_THREADS is kept; the others are set by perfopt.
    assert!(
        text.contains(r#"{"name":"OMP_NUM_THREADS","value":"1","set_by":"user""#),
        "{text}"
    );
    // OpenMP read its variables when libtorch loaded: the report says so.
    assert!(
        text.contains(
            r#"{"name":"OMP_WAIT_POLICY","value":"PASSIVE","set_by":"perfopt","in_time":false"#
        ),
        "{text}"
    );
    // numexpr reads its own when it is imported, so later is still in time.
    let numexpr = text
        .split(r#""name":"NUMEXPR_NUM_THREADS""#)
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    assert!(numexpr.contains(r#""in_time":true"#), "{text}");
    assert_eq!(std::env::var("OMP_WAIT_POLICY").unwrap(), "PASSIVE");
    perfopt_optimizer_free(optimizer);
}
