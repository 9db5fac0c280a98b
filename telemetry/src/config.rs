//! [`TelemetryConfig`]: what can be set about metrics, tracing and the access log, with
//! every default named and explained where it is defined. Serde's defaults and `Default`
//! call the same functions, so a file and the code never disagree.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `per_endpoint_metrics` | `true` | request counts carry an `endpoint` label |
//! | `trace_sample_ratio` | `0.01` | share of new root traces sampled |
//! | `otlp_endpoint` | none | `http://host:port/path` of the collector; none: no export |
//! | `trace_service_name` | `"coremesh"` | `service.name` of exported spans |
//! | `span_queue_capacity` | `4096` | spans waiting for export before new ones are dropped |
//! | `export_batch_size` | `512` | spans per OTLP post |
//! | `export_interval_ms` | `1000` | longest a span waits before its batch is posted |
//! | `export_timeout_ms` | `5000` | longest one post may take |
//! | `export_max_retries` | `3` | posts of a batch again after a 429/502/503/504 |
//! | `export_max_retry_delay_ms` | `30000` | longest wait before such a retry (caps `Retry-After`) |
//! | `access_log` | `false` | write one JSON line per request |
//! | `max_client_ids` | `100` | callers' identities (`client_id`) each core labels inbound requests with; the rest count as `other` |

use crate::metrics::DEFAULT_MAX_CLIENT_IDS;
use crate::otlp::{
    CollectorUrl, ExporterConfig, DEFAULT_EXPORT_BATCH, DEFAULT_EXPORT_INTERVAL,
    DEFAULT_EXPORT_MAX_RETRIES, DEFAULT_EXPORT_MAX_RETRY_DELAY, DEFAULT_EXPORT_TIMEOUT,
};
use crate::span_queue::DEFAULT_SPAN_QUEUE_CAPACITY;
use crate::trace::sampler::DEFAULT_SAMPLE_RATIO;
use crate::trace::Sampler;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Telemetry settings. See the module table for defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Request counts carry an `endpoint` label (off bounds cardinality to
    /// routes × services).
    pub per_endpoint_metrics: bool,
    /// Share of new root traces sampled (0 to 1); traces arriving with a decision keep it.
    pub trace_sample_ratio: f64,
    /// The collector's OTLP/HTTP traces endpoint; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans' resource.
    pub trace_service_name: String,
    /// Spans waiting for export before new ones are dropped (1 to 1 000 000).
    pub span_queue_capacity: usize,
    /// Spans per post (1 to 65 536).
    pub export_batch_size: usize,
    /// Longest a span waits before its batch is posted, ms (1 ms to 1 hour).
    pub export_interval_ms: u64,
    /// Longest one post may take, ms (1 ms to 10 minutes).
    pub export_timeout_ms: u64,
    /// Times a batch is posted again when the collector asks for a retry (0 to 10).
    pub export_max_retries: u32,
    /// Longest wait before such a retry, ms, whatever `Retry-After` says (1 ms to 10
    /// minutes).
    pub export_max_retry_delay_ms: u64,
    /// Write one JSON line per request.
    pub access_log: bool,
    /// Distinct callers' identities (`client_id`) each core counts inbound requests under;
    /// the callers beyond count under `client_id="other"` (0 to 10 000; 0: all of them).
    pub max_client_ids: usize,
}

/// The most `max_client_ids` may be: beyond, a scrape could carry hundreds of thousands
/// of series.
pub const MAX_MAX_CLIENT_IDS: u64 = 10_000;

fn default_per_endpoint_metrics() -> bool {
    // Per-endpoint counts are what an operator looks at first when one instance misbehaves;
    // a mesh with thousands of endpoints per route can turn them off.
    true
}

fn default_trace_service_name() -> String {
    "coremesh".to_string()
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            per_endpoint_metrics: default_per_endpoint_metrics(),
            trace_sample_ratio: DEFAULT_SAMPLE_RATIO,
            otlp_endpoint: None,
            trace_service_name: default_trace_service_name(),
            span_queue_capacity: DEFAULT_SPAN_QUEUE_CAPACITY,
            export_batch_size: DEFAULT_EXPORT_BATCH,
            export_interval_ms: DEFAULT_EXPORT_INTERVAL.as_millis() as u64,
            export_timeout_ms: DEFAULT_EXPORT_TIMEOUT.as_millis() as u64,
            export_max_retries: DEFAULT_EXPORT_MAX_RETRIES,
            export_max_retry_delay_ms: DEFAULT_EXPORT_MAX_RETRY_DELAY.as_millis() as u64,
            access_log: false,
            max_client_ids: DEFAULT_MAX_CLIENT_IDS,
        }
    }
}

/// A setting out of range, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TelemetryConfigError {
    /// The key.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl TelemetryConfig {
    /// Checks every setting's range (and the collector URL).
    pub fn validate(&self) -> Result<(), TelemetryConfigError> {
        let err = |field, message: String| Err(TelemetryConfigError { field, message });
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return err(
                "trace_sample_ratio",
                format!("must be from 0 to 1, not {}", self.trace_sample_ratio),
            );
        }
        if let Some(url) = &self.otlp_endpoint {
            if let Err(e) = CollectorUrl::parse(url) {
                return err("otlp_endpoint", e.to_string());
            }
        }
        if self.trace_service_name.is_empty() {
            return err("trace_service_name", "must not be empty".into());
        }
        let ranges: [(&'static str, u64, u64, u64); 7] = [
            (
                "max_client_ids",
                self.max_client_ids as u64,
                0,
                MAX_MAX_CLIENT_IDS,
            ),
            (
                "span_queue_capacity",
                self.span_queue_capacity as u64,
                1,
                1_000_000,
            ),
            (
                "export_batch_size",
                self.export_batch_size as u64,
                1,
                65_536,
            ),
            ("export_interval_ms", self.export_interval_ms, 1, 3_600_000),
            ("export_timeout_ms", self.export_timeout_ms, 1, 600_000),
            (
                "export_max_retries",
                u64::from(self.export_max_retries),
                0,
                10,
            ),
            (
                "export_max_retry_delay_ms",
                self.export_max_retry_delay_ms,
                1,
                600_000,
            ),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return err(field, format!("must be from {min} to {max}, not {value}"));
            }
        }
        Ok(())
    }

    /// The sampler for new root traces.
    pub fn sampler(&self) -> Sampler {
        Sampler::new(self.trace_sample_ratio)
    }

    /// The exporter's settings, when a collector is configured (and its URL is valid:
    /// [`validate`](Self::validate) says why not).
    pub fn exporter_config(&self) -> Option<ExporterConfig> {
        let collector = CollectorUrl::parse(self.otlp_endpoint.as_deref()?).ok()?;
        Some(ExporterConfig {
            collector,
            service_name: self.trace_service_name.clone(),
            max_batch: self.export_batch_size,
            interval: Duration::from_millis(self.export_interval_ms),
            timeout: Duration::from_millis(self.export_timeout_ms),
            max_retries: self.export_max_retries,
            max_retry_delay: Duration::from_millis(self.export_max_retry_delay_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_export_nothing() {
        let config = TelemetryConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(config.per_endpoint_metrics);
        assert_eq!(config.trace_sample_ratio, 0.01);
        assert_eq!(config.span_queue_capacity, 4096);
        assert_eq!(config.export_batch_size, 512);
        assert_eq!(config.export_interval_ms, 1000);
        assert_eq!(config.export_timeout_ms, 5000);
        assert_eq!(config.export_max_retries, 3);
        assert_eq!(config.export_max_retry_delay_ms, 30_000);
        assert!(!config.access_log);
        assert_eq!(config.exporter_config(), None);
        assert_eq!(config.sampler().ratio(), 0.01);
    }

    #[test]
    fn an_empty_document_gives_the_defaults() {
        let config: TelemetryConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, TelemetryConfig::default());
    }

    #[test]
    fn settings_become_an_exporter_config() {
        let config: TelemetryConfig = serde_json::from_str(
            r#"{"otlp_endpoint":"http://127.0.0.1:4318","export_batch_size":10,
                "export_interval_ms":50,"export_timeout_ms":200,"trace_service_name":"edge",
                "export_max_retries":0,"export_max_retry_delay_ms":1500}"#,
        )
        .unwrap();
        assert_eq!(config.validate(), Ok(()));
        let exporter = config.exporter_config().unwrap();
        assert_eq!(
            exporter.collector.to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(exporter.max_batch, 10);
        assert_eq!(exporter.interval, Duration::from_millis(50));
        assert_eq!(exporter.timeout, Duration::from_millis(200));
        assert_eq!(exporter.service_name, "edge");
        assert_eq!(exporter.max_retries, 0);
        assert_eq!(exporter.max_retry_delay, Duration::from_millis(1500));
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let field = |config: TelemetryConfig| config.validate().unwrap_err().field;
        let base = TelemetryConfig::default;
        assert_eq!(
            field(TelemetryConfig {
                trace_sample_ratio: 1.5,
                ..base()
            }),
            "trace_sample_ratio"
        );
        assert_eq!(
            field(TelemetryConfig {
                trace_sample_ratio: f64::NAN,
                ..base()
            }),
            "trace_sample_ratio"
        );
        assert_eq!(
            field(TelemetryConfig {
                otlp_endpoint: Some("https://c".into()),
                ..base()
            }),
            "otlp_endpoint"
        );
        let with_user = TelemetryConfig {
            otlp_endpoint: Some("http://user:secret@[::1]:4318".into()),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(with_user.field, "otlp_endpoint");
        assert!(
            with_user.to_string().contains("user name or password"),
            "{with_user}"
        );
        assert_eq!(
            TelemetryConfig {
                otlp_endpoint: Some("http://[::1]:4318".into()),
                ..base()
            }
            .validate(),
            Ok(())
        );
        assert_eq!(
            field(TelemetryConfig {
                span_queue_capacity: 0,
                ..base()
            }),
            "span_queue_capacity"
        );
        let e = TelemetryConfig {
            export_timeout_ms: 0,
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "export_timeout_ms: must be from 1 to 600000, not 0"
        );
        assert_eq!(
            field(TelemetryConfig {
                export_max_retries: 11,
                ..base()
            }),
            "export_max_retries"
        );
        assert_eq!(
            field(TelemetryConfig {
                export_max_retry_delay_ms: 0,
                ..base()
            }),
            "export_max_retry_delay_ms"
        );
        assert_eq!(
            field(TelemetryConfig {
                max_client_ids: 10_001,
                ..base()
            }),
            "max_client_ids"
        );
        assert!(serde_json::from_str::<TelemetryConfig>(r#"{"nope":1}"#).is_err());
    }
}
