-- Run once by the mariadb image's entrypoint on a fresh volume (docker-compose.yml),
-- after it has created database `flashorder` and user flashorder/flashorder.
-- The image grants that user only flashorder.*; the test suite creates its own
-- flashorder_test_* databases, so match scripts/services.sh: ALL on *.*.
-- Dev only: the port is published on 127.0.0.1.
GRANT ALL PRIVILEGES ON *.* TO 'flashorder'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
