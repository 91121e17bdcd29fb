//! The C ABI called from Rust: argument checking, status codes, the
//! last-error message, buffers, handles and logging.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;
use std::sync::Mutex;

use perfopt::ffi::library::*;
use perfopt::ffi::optimizer::*;
use perfopt::ffi::scope::*;
use perfopt::ffi::status::perfopt_status;
use perfopt::ffi::status::perfopt_status::*;
use perfopt::ffi::types::*;

fn last_error() -> String {
    let ptr = perfopt_last_error();
    assert!(!ptr.is_null(), "a failed call leaves a message");
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_string()
}

fn cpu_config() -> perfopt_config {
    let mut config = perfopt_config::default();
    assert_eq!(perfopt_config_default(&mut config), PERFOPT_OK);
    config.device = c"cpu".as_ptr();
    config.read_environment = 0;
    config
}

fn new_optimizer() -> *mut perfopt_optimizer {
    let config = cpu_config();
    let mut optimizer = ptr::null_mut();
    assert_eq!(perfopt_optimizer_new(&config, &mut optimizer), PERFOPT_OK);
    assert!(perfopt_last_error().is_null());
    optimizer
}

#[test]
fn versions_are_consistent() {
    assert_eq!(perfopt_abi_version(), PERFOPT_ABI_VERSION);
    let version = unsafe { CStr::from_ptr(perfopt_version()) }
        .to_str()
        .unwrap();
    assert!(
        version.starts_with("perfopt 0.1.0 (libtorch 2.11.0, cuda "),
        "{version}"
    );
}

#[test]
fn status_names_cover_every_code() {
    for status in perfopt_status::all() {
        let name = unsafe { CStr::from_ptr(perfopt_status_name(*status as i32)) };
        assert_eq!(name, status.name());
    }
    let past_the_end = perfopt_status::all().len() as i32;
    for unknown in [-1, past_the_end, i32::MAX] {
        let name = unsafe { CStr::from_ptr(perfopt_status_name(unknown)) };
        assert_eq!(name.to_str().unwrap(), "PERFOPT_UNKNOWN_STATUS");
        let message = unsafe { CStr::from_ptr(perfopt_status_message(unknown)) };
        assert_eq!(message.to_str().unwrap(), "unknown status");
    }
    let message = unsafe { CStr::from_ptr(perfopt_status_message(1)) };
    assert_eq!(
        message.to_str().unwrap(),
        "A required pointer argument was NULL."
    );
}

#[test]
fn null_arguments_are_reported_by_name() {
    assert_eq!(
        perfopt_config_default(ptr::null_mut()),
        PERFOPT_ERR_NULL_ARGUMENT
    );
    assert!(last_error().contains("config"));
    assert_eq!(
        perfopt_optimizer_new(ptr::null(), ptr::null_mut()),
        PERFOPT_ERR_NULL_ARGUMENT
    );
    assert!(last_error().contains("out"));
    let mut batch = 0;
    assert_eq!(
        perfopt_optimal_batch_size(ptr::null(), &mut batch),
        PERFOPT_ERR_NULL_ARGUMENT
    );
    assert!(last_error().contains("optimizer"));
    assert_eq!(
        perfopt_inference_exit(ptr::null_mut()),
        PERFOPT_ERR_NULL_ARGUMENT
    );
    let mut needed = 0usize;
    assert_eq!(
        perfopt_optimizer_report(ptr::null(), ptr::null_mut(), 0, &mut needed),
        PERFOPT_ERR_NULL_ARGUMENT
    );
    // Freeing NULL is a no-op and not an error.
    perfopt_optimizer_free(ptr::null_mut());
}

#[test]
fn bad_configs_are_rejected_and_nothing_is_written() {
    let sentinel = 0x1 as *mut perfopt_optimizer;
    type Mutation = Box<dyn Fn(&mut perfopt_config)>;
    let cases: Vec<(Mutation, perfopt_status, &str)> = vec![
        (
            Box::new(|c| c.struct_size = 8),
            PERFOPT_ERR_STRUCT_SIZE,
            "struct_size",
        ),
        (
            // Larger than any struct perfopt reads the tail of (a newer
            // header's struct is read past this library's, so the test
            // cannot merely add 8 to a struct of this size).
            Box::new(|c| c.struct_size = 8192),
            PERFOPT_ERR_STRUCT_SIZE,
            "struct_size",
        ),
        (
            Box::new(|c| c.device = c"tpu".as_ptr()),
            PERFOPT_ERR_INVALID_ARGUMENT,
            "tpu",
        ),
        (
            Box::new(|c| c.device = c"".as_ptr()),
            PERFOPT_ERR_INVALID_ARGUMENT,
            "device",
        ),
        (
            Box::new(|c| c.device = c"cuda:0".as_ptr()),
            PERFOPT_ERR_UNSUPPORTED_DEVICE,
            "cuda",
        ),
        (
            Box::new(|c| c.device = c"\xffcpu".as_ptr()),
            PERFOPT_ERR_INVALID_UTF8,
            "config.device",
        ),
        (
            Box::new(|c| c.compile_mode = c"fastest".as_ptr()),
            PERFOPT_ERR_INVALID_ARGUMENT,
            "fastest",
        ),
        (
            Box::new(|c| c.cudnn_benchmark = 7),
            PERFOPT_ERR_INVALID_ARGUMENT,
            "cudnn_benchmark",
        ),
        (
            Box::new(|c| c.read_environment = -1),
            PERFOPT_ERR_INVALID_ARGUMENT,
            "read_environment",
        ),
        (
            Box::new(|c| c.intra_op_threads = -2),
            PERFOPT_ERR_INVALID_ARGUMENT,
            "intra_op_threads",
        ),
    ];
    for (mutate, expected, needle) in cases {
        let mut config = cpu_config();
        mutate(&mut config);
        let mut out = sentinel;
        let status = perfopt_optimizer_new(&config, &mut out);
        assert_eq!(status, expected, "{}", last_error());
        assert!(last_error().contains(needle), "{needle}: {}", last_error());
        assert_eq!(out, sentinel, "outputs are written only on success");
    }
    // And the next correct call succeeds.
    let optimizer = new_optimizer();
    perfopt_optimizer_free(optimizer);
}

#[test]
fn report_buffers_report_the_size_needed() {
    let optimizer = new_optimizer();
    let mut needed = 0usize;
    assert_eq!(
        perfopt_optimizer_report(optimizer, ptr::null_mut(), 0, &mut needed),
        PERFOPT_ERR_BUFFER_TOO_SMALL
    );
    assert!(needed > 100);
    let mut small = vec![0 as c_char; 16];
    assert_eq!(
        perfopt_optimizer_report(optimizer, small.as_mut_ptr(), small.len(), &mut needed),
        PERFOPT_ERR_BUFFER_TOO_SMALL
    );
    assert!(last_error().contains("needed"));
    let mut buf = vec![0 as c_char; needed + 64];
    assert_eq!(
        perfopt_optimizer_report(optimizer, buf.as_mut_ptr(), buf.len(), &mut needed),
        PERFOPT_OK
    );
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(text.len() + 1, needed);
    assert!(text.starts_with('{') && text.ends_with('}'));
    assert!(text.contains("\"kind\":\"cpu\""), "{text}");
    let mut batch = 0;
    assert_eq!(
        perfopt_optimal_batch_size(optimizer, &mut batch),
        PERFOPT_OK
    );
    assert_eq!(batch, 1);
    perfopt_optimizer_free(optimizer);
}

#[test]
fn freed_and_foreign_handles_are_invalid() {
    let optimizer = new_optimizer();
    perfopt_optimizer_free(optimizer);
    let mut batch = 0;
    assert_eq!(
        perfopt_optimal_batch_size(optimizer, &mut batch),
        PERFOPT_ERR_INVALID_HANDLE
    );
    // A double free is logged, not a crash.
    perfopt_optimizer_free(optimizer);
    // A scope handle passed as an optimizer is refused by kind.
    let optimizer = new_optimizer();
    let mut scope = ptr::null_mut();
    assert_eq!(perfopt_inference_enter(optimizer, &mut scope), PERFOPT_OK);
    assert_eq!(
        perfopt_optimal_batch_size(scope.cast(), &mut batch),
        PERFOPT_ERR_INVALID_HANDLE
    );
    assert!(last_error().contains("perfopt_scope"));
    assert_eq!(perfopt_inference_exit(scope), PERFOPT_OK);
    assert_eq!(perfopt_inference_exit(scope), PERFOPT_ERR_INVALID_HANDLE);
    perfopt_optimizer_free(optimizer);
}

#[test]
fn scopes_exit_in_order_on_their_thread() {
    let optimizer = new_optimizer();
    let (mut outer, mut inner) = (ptr::null_mut(), ptr::null_mut());
    assert_eq!(perfopt_inference_enter(optimizer, &mut outer), PERFOPT_OK);
    assert_eq!(perfopt_inference_enter(optimizer, &mut inner), PERFOPT_OK);
    assert_eq!(perfopt_inference_exit(outer), PERFOPT_ERR_SCOPE_ORDER);
    assert!(last_error().contains("innermost"));

    let inner_addr = inner as usize;
    let status =
        std::thread::spawn(move || perfopt_inference_exit(inner_addr as *mut perfopt_scope))
            .join()
            .unwrap();
    assert_eq!(status, PERFOPT_ERR_WRONG_THREAD);

    // The optimizer may be freed while scopes are open: they keep it alive.
    perfopt_optimizer_free(optimizer);
    assert_eq!(perfopt_inference_exit(inner), PERFOPT_OK);
    assert_eq!(perfopt_inference_exit(outer), PERFOPT_OK);
}

static LOG_LINES: Mutex<Vec<(i32, String, usize)>> = Mutex::new(Vec::new());

unsafe extern "C" fn capture(level: i32, message: *const c_char, user_data: *mut c_void) {
    let text = CStr::from_ptr(message).to_string_lossy().into_owned();
    LOG_LINES
        .lock()
        .unwrap()
        .push((level, text, user_data as usize));
}

#[test]
fn log_records_reach_the_host_callback() {
    assert_eq!(
        perfopt_set_log_callback(Some(capture), 0x42 as *mut c_void, 9),
        PERFOPT_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        perfopt_set_log_callback(Some(capture), 0x42 as *mut c_void, PERFOPT_LOG_INFO),
        PERFOPT_OK
    );
    let optimizer = new_optimizer();
    perfopt_optimizer_free(optimizer);
    assert_eq!(
        perfopt_set_log_callback(None, ptr::null_mut(), 0),
        PERFOPT_OK
    );
    let lines = LOG_LINES.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|(level, text, data)| *level == PERFOPT_LOG_INFO
                && text.contains("optimizer ready")
                && *data == 0x42),
        "{lines:?}"
    );
}

#[test]
fn strings_in_messages_are_copied() {
    // The device string is only read during the call.
    let device = CString::new("cpu").unwrap();
    let mut config = cpu_config();
    config.device = device.as_ptr();
    let mut optimizer = ptr::null_mut();
    assert_eq!(perfopt_optimizer_new(&config, &mut optimizer), PERFOPT_OK);
    drop(device);
    let mut batch = 0;
    assert_eq!(
        perfopt_optimal_batch_size(optimizer, &mut batch),
        PERFOPT_OK
    );
    perfopt_optimizer_free(optimizer);
}
