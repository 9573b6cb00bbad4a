-- A receipt's hash was kept unique by an index of its own. Nothing looks a receipt up by its
-- hash (blocks list job ids; readers go by job and attempt), and the hash signs the job id and
-- attempt, which the primary key (job_id, attempt) already keeps unique. The index cost every
-- receipt an insert at a random place in a large tree: a page read, often a full-page image in
-- the WAL, on the path of every RESULT. (The audit recomputes the hash of each settled receipt
-- from its fields when it rebuilds its block's root.)
alter table receipts drop constraint if exists receipts_receipt_hash_key;
