//! The in-process bus: one node, so publishing is handing the batch to this node's hub.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Bus, EventSink};
use crate::{domain::TenantId, event::Event, store::Publisher};

pub struct LocalBus {
    sink: Arc<dyn EventSink>,
}

impl LocalBus {
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        LocalBus { sink }
    }
}

impl Publisher for LocalBus {
    fn publish(&self, events: Vec<Event>) {
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        self.sink.deliver(&events);
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn join(&self, _tenant: &TenantId) -> Result<(), String> {
        // One node: every committed event is delivered here already.
        Ok(())
    }

    fn leave(&self, _tenant: &TenantId) {}

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}
