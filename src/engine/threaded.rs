//! A libtorch form at its own thread count: the calling thread's OpenMP
//! count is set around each call (src/torch/threads.rs) and put back after,
//! so that two models on one process, or one model called from threads that
//! also run other work, each run at their own count. Everything else is the
//! form's own: the module and its state are shared, not copied.

use std::sync::Arc;

use super::{Engine, Format, Inputs, MethodSchema, State, Variant};
use crate::error::Result;
use crate::json::Json;
use crate::runtime::threads::CallThreads;
use crate::value::Value;

pub struct Threaded {
    inner: Arc<dyn Engine>,
    threads: usize,
}

impl Threaded {
    pub fn new(inner: Arc<dyn Engine>, threads: usize) -> Threaded {
        Threaded { inner, threads }
    }
}

impl Engine for Threaded {
    fn format(&self) -> Format {
        self.inner.format()
    }

    fn methods(&self) -> &[MethodSchema] {
        self.inner.methods()
    }

    fn call(&self, method: &str, args: &[Value]) -> Result<Value> {
        let _threads = CallThreads::enter(self.threads)?;
        self.inner.call(method, args)
    }

    fn variants(&self) -> Vec<Variant> {
        self.inner.variants()
    }

    fn as_loaded_label(&self) -> String {
        self.inner.as_loaded_label()
    }

    fn default_why(&self) -> String {
        self.inner.default_why()
    }

    fn tuning_variants(&self) -> Vec<Variant> {
        self.inner.tuning_variants()
    }

    fn is_form(&self, label: &str) -> bool {
        self.inner.is_form(label)
    }

    fn builds_form(&self, label: &str) -> bool {
        self.inner.builds_form(label)
    }

    fn build_variant(&self, variant: &Variant) -> Result<Arc<dyn Engine>> {
        // Built at this count: oneDNN fixes a primitive's thread count when
        // freezing prepacks it.
        let form = {
            let _threads = CallThreads::enter(self.threads)?;
            self.inner.build_variant(variant)?
        };
        Ok(Arc::new(Threaded::new(form, self.threads)))
    }

    fn save_state(&self) -> Result<Option<State>> {
        self.inner.save_state()
    }

    fn restore_state(&self, state: &State) -> Result<()> {
        self.inner.restore_state(state)
    }

    fn writes_state(&self) -> bool {
        self.inner.writes_state()
    }

    fn adopt_state(&self, from: &dyn Engine) -> Result<()> {
        self.inner.adopt_state(from)
    }

    fn state_equals(&self, state: &State) -> Result<bool> {
        self.inner.state_equals(state)
    }

    fn save(&self) -> Result<Option<Vec<u8>>> {
        self.inner.save()
    }

    fn load_saved(&self, path: &str, variant: &Variant) -> Result<Option<Arc<dyn Engine>>> {
        let form = {
            let _threads = CallThreads::enter(self.threads)?;
            self.inner.load_saved(path, variant)?
        };
        Ok(form.map(|form| Arc::new(Threaded::new(form, self.threads)) as Arc<dyn Engine>))
    }

    fn with_threads(&self, threads: usize) -> Result<Option<Arc<dyn Engine>>> {
        Ok(Some(Arc::new(Threaded::new(self.inner.clone(), threads))))
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }

    fn own_allocator(&self) -> Option<&'static str> {
        self.inner.own_allocator()
    }

    fn inputs(&self) -> Inputs {
        self.inner.inputs()
    }

    fn batch_limit(&self) -> Option<i64> {
        self.inner.batch_limit()
    }

    fn fixed_batch(&self) -> Option<i64> {
        self.inner.fixed_batch()
    }

    fn describe(&self) -> Json {
        self.inner.describe().with("threads", self.threads as u64)
    }
}
