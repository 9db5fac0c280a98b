//! Moving counts between layouts, by label names: when a core installs a new layout
//! (counts of label sets that stay carry over; those that left are dropped), when snapshots
//! taken under different layouts are merged, and when a request that started under an older
//! layout records with its older handles ([`Translation`]).

use super::labels::EndpointState;
use super::latency::HISTOGRAM_STRIDE;
use super::layout::{
    EndpointId, MetricsLayout, RouteId, ServiceId, CLASSES, DIRECTIONS, ENDPOINT_STRIDE, EP_STATE,
    GLOBALS, SERVICE_STRIDE,
};
use std::sync::Arc;

/// What to do with the endpoint-state cells (gauges) when moving counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateCells {
    /// Add them (merging cores: the value counts cores).
    Add,
    /// Overwrite them (a core moving to a new layout keeps its own view of the endpoint).
    Replace,
}

/// Adds the counts `values` (laid out by `from`) into `out` (laid out by `to`), matching
/// label sets by name. Label sets `to` does not have are dropped; with per-endpoint metrics
/// off in `to`, request counts fold into the (service, route) slot.
pub(crate) fn remap(
    from: &MetricsLayout,
    values: &[u64],
    to: &MetricsLayout,
    out: &mut [u64],
    states: StateCells,
) {
    if values.len() != from.len || out.len() != to.len {
        debug_assert!(false, "values do not fit their layout");
        return;
    }
    add(&mut out[..GLOBALS], &values[..GLOBALS]);

    for (r, route) in from.routes.iter().enumerate() {
        let service_name = route.service.map(|s| &*from.services[s as usize].name);
        let Some(to_r) = to.route_by_names(route.name.as_deref(), service_name) else {
            continue;
        };
        let to_route = &to.routes[to_r];
        for slot in 0..route.slots {
            let to_slot = if slot == 0 || !to.per_endpoint {
                0
            } else {
                let endpoint = route
                    .service
                    .and_then(|s| from.services[s as usize].endpoints.get(slot - 1));
                let to_local = match (endpoint, to_route.service) {
                    (Some(endpoint), Some(to_s)) => to.services[to_s as usize]
                        .endpoint_by_name
                        .get(endpoint)
                        .copied(),
                    _ => None,
                };
                match to_local {
                    Some(local) => local as usize + 1,
                    None => continue,
                }
            };
            for d in 0..DIRECTIONS {
                let src = route.request_cell(d, slot);
                let dst = to_route.request_cell(d, to_slot);
                add(&mut out[dst..dst + CLASSES], &values[src..src + CLASSES]);
            }
        }
        // A route entry's histograms, one per direction, are side by side.
        let src = from.latency_block(r, 0);
        let dst = to.latency_block(to_r, 0);
        let n = DIRECTIONS * HISTOGRAM_STRIDE;
        add(&mut out[dst..dst + n], &values[src..src + n]);
    }

    for (s, service) in from.services.iter().enumerate() {
        let Some(to_s) = to.service_by_name(&service.name) else {
            continue;
        };
        let src = from.service_block(s);
        let dst = to.service_block(to_s);
        add(
            &mut out[dst..dst + SERVICE_STRIDE],
            &values[src..src + SERVICE_STRIDE],
        );
        for (local, endpoint) in service.endpoints.iter().enumerate() {
            let Some(&to_local) = to.services[to_s].endpoint_by_name.get(endpoint) else {
                continue;
            };
            let (Some(src), Some(dst)) = (
                from.endpoint_block(s, local),
                to.endpoint_block(to_s, to_local as usize),
            ) else {
                continue;
            };
            add(&mut out[dst..dst + EP_STATE], &values[src..src + EP_STATE]);
            let (src, dst) = (src + EP_STATE, dst + EP_STATE);
            let n = ENDPOINT_STRIDE - EP_STATE;
            match states {
                StateCells::Add => add(&mut out[dst..dst + n], &values[src..src + n]),
                StateCells::Replace => out[dst..dst + n].copy_from_slice(&values[src..src + n]),
            }
        }
    }
}

/// Fresh counts for `layout`: all zero, every endpoint available.
pub(crate) fn fresh_values(layout: &MetricsLayout) -> Vec<u64> {
    let mut values = vec![0; layout.len];
    let available = EP_STATE + EndpointState::Available.slot();
    for e in 0..layout.endpoint_count {
        values[layout.endpoints_base + e * ENDPOINT_STRIDE + available] = 1;
    }
    values
}

fn add(out: &mut [u64], values: &[u64]) {
    for (o, v) in out.iter_mut().zip(values) {
        *o = o.wrapping_add(*v);
    }
}

const GONE: u32 = u32::MAX;

/// Maps the handles of an older layout to those of the current one, so a request that
/// started before a configuration change still counts under its labels.
#[derive(Debug)]
pub(crate) struct Translation {
    generation: u32,
    to_generation: u32,
    services: Vec<u32>,
    routes: Vec<u32>,
    /// Per older service: each endpoint's index in the current layout's service.
    endpoints: Vec<Vec<u32>>,
}

impl Translation {
    pub(crate) fn new(from: &Arc<MetricsLayout>, to: &MetricsLayout) -> Translation {
        let services = from
            .services
            .iter()
            .map(|s| to.service_by_name(&s.name).map_or(GONE, |i| i as u32))
            .collect();
        let routes = from
            .routes
            .iter()
            .map(|r| {
                let service = r.service.map(|s| &*from.services[s as usize].name);
                to.route_by_names(r.name.as_deref(), service)
                    .map_or(GONE, |i| i as u32)
            })
            .collect();
        let endpoints = from
            .services
            .iter()
            .map(|s| {
                let to_service = to.service_by_name(&s.name).map(|i| &to.services[i]);
                s.endpoints
                    .iter()
                    .map(|e| {
                        to_service
                            .and_then(|t| t.endpoint_by_name.get(e).copied())
                            .unwrap_or(GONE)
                    })
                    .collect()
            })
            .collect();
        Translation {
            generation: from.generation,
            to_generation: to.generation,
            services,
            routes,
            endpoints,
        }
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    pub(crate) fn service(&self, id: ServiceId) -> Option<ServiceId> {
        let index = *self.services.get(id.index as usize)?;
        (id.generation == self.generation && index != GONE).then_some(ServiceId {
            generation: self.to_generation,
            index,
        })
    }

    pub(crate) fn route(&self, id: RouteId) -> Option<RouteId> {
        let index = *self.routes.get(id.index as usize)?;
        (id.generation == self.generation && index != GONE).then_some(RouteId {
            generation: self.to_generation,
            index,
        })
    }

    pub(crate) fn endpoint(&self, id: EndpointId) -> Option<EndpointId> {
        let service = self.service(id.service())?;
        let local = *self
            .endpoints
            .get(id.service as usize)?
            .get(id.local as usize)?;
        (local != GONE).then_some(EndpointId {
            generation: self.to_generation,
            service: service.index,
            local,
        })
    }

    /// The same translation, onward to a layout newer still (`next` maps this one's
    /// target to it).
    pub(crate) fn then(&self, next: &Translation) -> Translation {
        let step = |ids: &[u32], map: &[u32]| -> Vec<u32> {
            ids.iter()
                .map(|&i| map.get(i as usize).copied().unwrap_or(GONE))
                .collect()
        };
        let endpoints = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(s, locals)| {
                let to_s = self.services[s];
                let next_locals = next.endpoints.get(to_s as usize);
                locals
                    .iter()
                    .map(|&l| {
                        next_locals
                            .and_then(|n| n.get(l as usize).copied())
                            .unwrap_or(GONE)
                    })
                    .collect()
            })
            .collect();
        Translation {
            generation: self.generation,
            to_generation: next.to_generation,
            services: step(&self.services, &next.services),
            routes: step(&self.routes, &next.routes),
            endpoints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::layout::LayoutBuilder;

    fn layout(per_endpoint: bool, endpoints: &[&str]) -> Arc<MetricsLayout> {
        let mut b = LayoutBuilder::new(per_endpoint);
        let users = b.add_service("users", endpoints.iter());
        b.add_route("api", Some(users));
        b.build()
    }

    #[test]
    fn counts_follow_names_and_departed_endpoints_drop() {
        let old = layout(true, &["a:1", "b:1"]);
        let new = layout(true, &["b:1", "c:1"]);
        let mut values = fresh_values(&old);
        // api/users, endpoint b (slot 2), 2xx: 7 requests; endpoint a (slot 1): 5.
        let base = old.routes[1].request_base;
        values[base + 2 * CLASSES + 1] = 7;
        values[base + CLASSES + 1] = 5;
        // The same endpoint b, outbound (direction slot 2): 4 requests.
        values[old.routes[1].request_cell(2, 2) + 1] = 4;
        let mut out = fresh_values(&new);
        remap(&old, &values, &new, &mut out, StateCells::Replace);
        let base = new.routes[1].request_base;
        assert_eq!(out[base + CLASSES + 1], 7, "b is now the first endpoint");
        assert_eq!(out[base + 2 * CLASSES + 1], 0);
        assert_eq!(
            out[new.routes[1].request_cell(2, 1) + 1],
            4,
            "and outbound too"
        );
        assert_eq!(out.iter().sum::<u64>() - 2, 11, "a's 5 left with a");
    }

    #[test]
    fn turning_per_endpoint_off_folds_into_the_route() {
        let old = layout(true, &["a:1", "b:1"]);
        let new = layout(false, &["a:1", "b:1"]);
        let mut values = fresh_values(&old);
        let base = old.routes[1].request_base;
        values[base + 1] = 1;
        values[base + CLASSES + 1] = 2;
        values[base + 2 * CLASSES + 1] = 3;
        let mut out = fresh_values(&new);
        remap(&old, &values, &new, &mut out, StateCells::Add);
        assert_eq!(out[new.routes[1].request_base + 1], 6);
    }

    #[test]
    fn translations_compose() {
        let one = layout(true, &["a:1", "b:1"]);
        let two = layout(true, &["b:1"]);
        let three = layout(true, &["c:1", "b:1"]);
        let t12 = Translation::new(&one, &two);
        let t23 = Translation::new(&two, &three);
        let t13 = t12.then(&t23);
        let users = one.service_id("users").unwrap();
        let a = one.endpoint_at(users, 0).unwrap();
        let b = one.endpoint_at(users, 1).unwrap();
        assert_eq!(t13.endpoint(a), None);
        assert_eq!(
            t13.endpoint(b),
            three.endpoint_id(three.service_id("users").unwrap(), "b:1")
        );
        let api = one.route_id("api", Some(users)).unwrap();
        assert_eq!(
            t13.route(api),
            three.route_id("api", three.service_id("users"))
        );
        assert_eq!(t13.generation(), one.generation);
    }
}
