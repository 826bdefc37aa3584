//! Router: sends each event to the topic configured for its type prefix
//! (`[config] routes = { "order." = "order-events", ... }`); events of an
//! unrouted type are rejected so they show up in the dead-letter topic.

use sluice_guest::{Event, Failure, Output, Result, config};
use std::cell::OnceCell;
use std::collections::BTreeMap;

thread_local! {
    // Read once per instance: the config does not change while it lives.
    static ROUTES: OnceCell<&'static BTreeMap<String, String>> = const { OnceCell::new() };
}

fn routes() -> Result<&'static BTreeMap<String, String>> {
    if let Some(r) = ROUTES.with(|c| c.get().copied()) {
        return Ok(r);
    }
    let r: BTreeMap<String, String> = config::get_parsed("routes")?.unwrap_or_default();
    let r: &'static BTreeMap<String, String> = Box::leak(Box::new(r));
    ROUTES.with(|c| c.set(r).ok());
    Ok(r)
}

/// Forward the event, unchanged, to the topic for its type.
pub fn handle(event: &Event) -> Result {
    let ty = event.ty();
    let Some(topic) = routes()?
        .iter()
        .find(|(prefix, _)| ty.starts_with(prefix.as_str()))
        .map(|(_, t)| t)
    else {
        return Err(Failure::reject(format!("no route for event type `{ty}`")));
    };
    let mut out = Output::new(topic, ty).data(event.data);
    if let Some(ct) = event.datacontenttype {
        out = out.content_type(ct);
    }
    if let Some(s) = event.subject {
        out = out.subject(s);
    }
    out.send()
}

sluice_guest::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{TestEvent, TestHost};

    #[test]
    fn routes_by_type_prefix_and_rejects_the_rest() {
        let host = TestHost::install().config(
            "routes",
            r#"{"order.":"order-events","payment.":"payment-events"}"#,
        );
        for ty in ["order.created", "payment.settled", "order.cancelled"] {
            TestEvent::json("in", ty, "{}").with(handle).unwrap();
        }
        let topics: Vec<_> = host.emitted().into_iter().map(|e| e.topic).collect();
        assert_eq!(topics, ["order-events", "payment-events", "order-events"]);
        let r = TestEvent::json("in", "user.signup", "{}").with(handle);
        assert!(matches!(r, Err(Failure::Reject(m)) if m.contains("user.signup")));
    }
}
