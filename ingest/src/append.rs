//! Appending events: encode, route to topic and key, append durably, and write control
//! entities through to the store.

use chrono::{DateTime, Utc};
use herald_http::ApiError;
use herald_log::OutgoingRecord;
use herald_schemas::HeraldEvent;
use herald_store::ReadModelWrite;

use crate::IngestState;

impl IngestState {
    /// Appends `events` and returns once they are durable. A failure is a 503: the client
    /// may retry, and nothing it was told was accepted is lost.
    pub(crate) async fn append(&self, events: &[HeraldEvent]) -> Result<(), ApiError> {
        let records = events
            .iter()
            .map(|event| {
                let (topic, key) = self.topics.route(event);
                let value = herald_schemas::encode(event).map_err(ApiError::internal)?;
                Ok(OutgoingRecord::new(topic, key, value))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        self.log.append(records).await.map_err(|err| {
            tracing::error!(error = %err, "log append failed");
            ApiError::Unavailable("the log did not accept the request; retry shortly".into())
        })?;
        Ok(())
    }

    /// Appends control events, then writes the entities they describe to the store so the
    /// client can use them at once. Once the append is durable the request has succeeded: a
    /// failed write-through is only logged, because the projector makes the same versioned
    /// writes from the log, and answering an error would invite a retry that creates a
    /// second tenant, endpoint or key.
    pub(crate) async fn append_control(
        &self,
        events: &[HeraldEvent],
        writes: Vec<ReadModelWrite>,
    ) -> Result<(), ApiError> {
        self.append(events).await?;
        if let Err(err) = self.store.apply(writes, None).await {
            tracing::warn!(error = %err, "write-through to the store failed; the projector will catch up");
        }
        Ok(())
    }
}

/// An `updated_at` (or deletion time) after `previous`, even if the clock has not moved: the
/// versions of a control entity must grow for the newest write to win.
pub(crate) fn next_version(previous: DateTime<Utc>) -> DateTime<Utc> {
    Utc::now().max(previous + chrono::TimeDelta::milliseconds(1))
}
