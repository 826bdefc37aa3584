//! Stateful aggregator: keeps a running total and count per customer and emits a
//! `total.updated` event with the new values after every order.

use serde::{Deserialize, Serialize};
use sluice_guest::{Event, Output, Result, state};

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    customer: &'a str,
    amount: i64,
}

/// The `total.updated` event.
#[derive(Serialize)]
struct Update<'a> {
    customer: &'a str,
    total: i64,
    count: u64,
    input: &'a str,
}

/// What is stored per customer, and published on every change.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
pub struct Total {
    pub total: i64,
    pub count: u64,
}

/// Add the order to its customer's total and publish the new total.
pub fn handle(event: &Event) -> Result {
    let order: Order = event.json()?;
    let key = format!("total/{}", order.customer);
    let mut t: Total = state::get_json(&key)?.unwrap_or_default();
    t.total += order.amount;
    t.count += 1;
    state::set_json(&key, &t)?;
    Output::new("totals", "total.updated")
        .key(order.customer)
        .json(&Update {
            customer: order.customer,
            total: t.total,
            count: t.count,
            input: event.id,
        })?
        .send()
}

sluice_guest::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{TestEvent, TestHost};

    #[test]
    fn keeps_a_running_total_per_customer() {
        let host = TestHost::install();
        for (c, a) in [("c1", 5), ("c2", 7), ("c1", -2)] {
            let data = format!(r#"{{"customer":"{c}","amount":{a}}}"#);
            TestEvent::json("orders", "order.created", &data)
                .with(handle)
                .unwrap();
        }
        let state = host.state();
        let c1: Total = serde_json::from_slice(&state[&b"total/c1".to_vec()]).unwrap();
        assert_eq!(c1, Total { total: 3, count: 2 });
        let out = host.emitted();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].json()["total"], 3);
        assert_eq!(out[2].key.as_deref(), Some(&b"c1"[..]));
    }
}
