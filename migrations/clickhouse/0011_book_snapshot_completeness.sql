-- book_snapshots say whether their levels are the exchange's (issue 16: "levels beyond the
-- snapshot are unknown until they change, and the data says so"). A book is built from a REST
-- snapshot of at most `limit` levels a side: below the lowest bid and above the highest ask it
-- returned, the exchange may hold levels the book has never seen (a diff only reports a level
-- when it changes). bids_complete is true when every bid level of the row lies inside the price
-- range that REST snapshot covered, so the row's bids are exactly the exchange's best levels;
-- false when some lie beyond it (they are exact quantities, but levels between them may be
-- missing). Same for asks. The live job and replay fill them from the same book state
-- (quant_core.depth_sync), as the NATS BookSnapshot contract's bids_complete / asks_complete.
-- Rows written before this migration read false: nothing was claimed for them.
ALTER TABLE book_snapshots ADD COLUMN IF NOT EXISTS bids_complete Bool DEFAULT false AFTER synced_from;
ALTER TABLE book_snapshots ADD COLUMN IF NOT EXISTS asks_complete Bool DEFAULT false AFTER bids_complete;
