//! Stateless filter: forwards orders whose `amount` is at least the manifest's
//! `min-amount` to the `output` topic.
//!
//! This is also the benchmark module: `tests/benches/pipeline.rs` calls
//! [`handle`] natively and the same code compiled to a component through the host.

use serde::Deserialize;
use sluice_guest::{Event, Output, Result, config};
use std::cell::OnceCell;

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    order_id: &'a str,
    amount: u64,
}

struct Settings {
    min_amount: u64,
    output: String,
}

thread_local! {
    // Read once per instance: the config does not change while it lives.
    static SETTINGS: OnceCell<&'static Settings> = const { OnceCell::new() };
}

fn settings() -> Result<&'static Settings> {
    if let Some(s) = SETTINGS.with(|c| c.get().copied()) {
        return Ok(s);
    }
    let min_amount = config::get_parsed("min-amount")?.unwrap_or(0);
    let output = config::get("output").unwrap_or_else(|| "large-orders".into());
    let s: &'static Settings = Box::leak(Box::new(Settings { min_amount, output }));
    SETTINGS.with(|c| c.set(s).ok());
    Ok(s)
}

/// Forward the order if it is large enough; reject what is not an order.
pub fn handle(event: &Event) -> Result {
    let s = settings()?;
    let order: Order = event.json()?;
    if order.amount < s.min_amount {
        return Ok(());
    }
    Output::new(&s.output, "order.large")
        .content_type("application/json")
        .data(event.data)
        .send()
}

sluice_guest::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::Failure;
    use sluice_guest::testing::{TestEvent, TestHost};

    #[test]
    fn forwards_only_orders_at_or_above_the_threshold() {
        let host = TestHost::install()
            .config("min-amount", "100")
            .config("output", "big");
        for amount in [99, 100, 250] {
            let data = format!(r#"{{"order_id":"o{amount}","amount":{amount}}}"#);
            TestEvent::json("orders", "order.created", &data)
                .with(handle)
                .unwrap();
        }
        let out = host.emitted();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].topic, "big");
        assert_eq!(out[0].json()["amount"], 100);
        assert_eq!(out[1].json()["amount"], 250);
    }

    #[test]
    fn rejects_data_that_is_not_an_order() {
        TestHost::install().config("min-amount", "1");
        let r = TestEvent::json("orders", "order.created", r#"{"amount":"lots"}"#).with(handle);
        assert!(matches!(r, Err(Failure::Reject(_))), "{r:?}");
    }
}
