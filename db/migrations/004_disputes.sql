-- A dispute's ruling with its evidence: the trace layer on which the provider's receipt and the
-- verifier's signed verdict first disagree, what each signed for it, what the coordinator's
-- referee computed, and who lost. One row per (job, attempt, verifier): a retried write is a
-- no-op.
create table if not exists disputes (
  job_id        bigint not null references jobs (id),
  attempt       int not null,
  verifier_key  text not null,
  provider_key  text not null,
  layer         int not null,            -- the trace layer re-run; -1: the whole job
  provider_hash text not null,
  verifier_hash text not null,
  referee_hash  text not null,
  loser         text not null check (loser in ('provider', 'verifier', 'both')),
  detail        text not null,
  ruled_at      timestamptz not null,
  primary key (job_id, attempt, verifier_key)
);
create index if not exists disputes_loser on disputes (loser, provider_key);
