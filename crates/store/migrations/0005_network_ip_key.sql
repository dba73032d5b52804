-- An allocation's address as 32 hex digits of its value (IPv4 as its 32-bit
-- value), so that an index orders a subnet's allocations numerically and
-- IPAM finds the lowest free address by counting ranges instead of reading
-- every allocation of the subnet. Rows written before this column existed
-- are filled in by the network service when it starts.
ALTER TABLE ip_allocation ADD COLUMN ip_key TEXT;
CREATE INDEX ip_allocation_subnet_key ON ip_allocation(subnet_id, ip_key);
