-- Gateway topology: which gateway a sub-device reaches the platform through. A sub-device has
-- at most one gateway; adding it to another gateway moves it. Identical for both back ends.

CREATE TABLE device_topology (
    product_key         TEXT NOT NULL,
    device_name         TEXT NOT NULL,
    gateway_product_key TEXT NOT NULL,
    gateway_device_name TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name)
);
CREATE INDEX device_topology_gateway ON device_topology (gateway_product_key, gateway_device_name);
