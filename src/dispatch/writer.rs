//! The group commit of everything a call writes: push claims (each call
//! waits for its answer before it pushes), claim outcomes (not waited for:
//! a duplicate call is told by `ClaimsSettled`) and call reports (each call
//! waits for its own). Whatever concurrent calls queued meanwhile goes into
//! one `Store::write_batch`.

use crate::domain::{now_ms, CallId};
use crate::store::{CallRecord, ClaimOutcome, ClaimRequest, Store, StoreError};
use crate::telemetry;

/// Wait for one job, then take whatever else is already queued (up to
/// `max`): the batch of a group commit. `None` once every sender is gone.
async fn next_batch<T>(rx: &mut tokio::sync::mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The group commit of everything dispatch writes: push claims (each call
/// waits for its answer before it pushes), claim outcomes (not waited for:
/// a duplicate call is told by `ClaimsSettled`) and call reports (each call
/// waits for its own, so `GET /v1/calls/{id}` right after the answer finds
/// it). Whatever concurrent calls queued meanwhile goes into one
/// transaction of a few multi-row statements (`Store::write_batch`).
pub(super) struct Writer {
    tx: tokio::sync::mpsc::Sender<WriteJob>,
    store: Store,
}

type Ack<T> = tokio::sync::oneshot::Sender<Result<T, String>>;

enum WriteJob {
    Claim(ClaimRequest, Ack<Option<CallId>>),
    ClaimOutcome(ClaimOutcome),
    Report(CallRecord, Ack<()>),
}

impl Writer {
    const QUEUE: usize = 4096;
    const BATCH: usize = 512;

    pub(super) fn start(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteJob>(Self::QUEUE);
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some(jobs) = next_batch(&mut rx, Self::BATCH).await {
                write_jobs(&writer, jobs).await;
            }
        });
        Self { tx, store }
    }

    /// Queue `job`; when the queue is full or the writer is gone, write it
    /// alone, here. Either way its answer goes to its ack.
    async fn submit(&self, job: WriteJob) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(job) | tokio::sync::mpsc::error::TrySendError::Closed(job)) = self.tx.try_send(job) {
            write_jobs(&self.store, vec![job]).await;
        }
    }

    /// Submit the job `with_ack` makes and wait for its answer.
    async fn ask<T>(&self, with_ack: impl FnOnce(Ack<T>) -> WriteJob) -> Result<T, StoreError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.submit(with_ack(ack)).await;
        done.await.map_err(|_| StoreError::Batch("call writer stopped".into()))?.map_err(StoreError::Batch)
    }

    pub(super) async fn claim(&self, req: ClaimRequest) -> Result<Option<CallId>, StoreError> {
        self.ask(|ack| WriteJob::Claim(req, ack)).await
    }

    pub(super) async fn save(&self, record: CallRecord) -> Result<(), StoreError> {
        self.ask(|ack| WriteJob::Report(record, ack)).await
    }

    pub(super) async fn claim_outcome(&self, outcome: ClaimOutcome) {
        self.submit(WriteJob::ClaimOutcome(outcome)).await;
    }
}

/// One group commit: the jobs' claims, outcomes and reports in one
/// `Store::write_batch`, each answer (or the error) sent to its ack.
async fn write_jobs(store: &Store, jobs: Vec<WriteJob>) {
    let (mut claims, mut claim_acks, mut outcomes, mut records, mut report_acks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for job in jobs {
        match job {
            WriteJob::Claim(c, ack) => {
                claims.push(c);
                claim_acks.push(ack);
            }
            WriteJob::ClaimOutcome(o) => outcomes.push(o),
            WriteJob::Report(r, ack) => {
                records.push(r);
                report_acks.push(ack);
            }
        }
    }
    match store.write_batch(&claims, now_ms(), &outcomes, &records).await {
        Ok(answers) => {
            for (ack, answer) in claim_acks.into_iter().zip(answers) {
                let _ = ack.send(Ok(answer));
            }
            for ack in report_acks {
                let _ = ack.send(Ok(()));
            }
        }
        Err(e) => {
            let e = e.to_string();
            metrics::counter!(telemetry::STORE_ERRORS).increment(1);
            tracing::error!(error = %e, claims = claims.len(), calls = records.len(), outcomes = outcomes.len(), "a batch of call writes could not be stored");
            for ack in claim_acks {
                let _ = ack.send(Err(e.clone()));
            }
            for ack in report_acks {
                let _ = ack.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_the_first_job_and_whatever_else_is_already_queued_up_to_the_cap() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for i in 0..5 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(next_batch(&mut rx, 3).await, Some(vec![0, 1, 2]));
        assert_eq!(next_batch(&mut rx, 3).await, Some(vec![3, 4]));
        let waiting = tokio::spawn(async move { next_batch(&mut rx, 3).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "an empty queue waits for a job");
        tx.send(9).await.unwrap();
        drop(tx);
        assert_eq!(waiting.await.unwrap(), Some(vec![9]));
    }
}
