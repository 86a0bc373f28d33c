#!/usr/bin/env bash
# Downloads the Apache Kafka broker (KRaft) classpath from Maven Central into
# ~/.cache/somafractal/kafka-<version>/lib, for the test fixtures in
# tests/servers/kafka.py. There is no Kafka tarball download here: Maven
# Central is the reachable registry, and kafka_2.13 + its runtime dependencies
# is exactly the broker classpath. Idempotent: exits at once when present.
# Prints the lib directory on stdout.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
SLF4J_VERSION="${SLF4J_VERSION:-1.7.36}"
CACHE="${SOMAFRACTAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/somafractal}"
HOME_DIR="$CACHE/kafka-$KAFKA_VERSION"
LIB="$HOME_DIR/lib"
STAMP="$LIB/.complete"

if [ -f "$STAMP" ]; then
  echo "$LIB"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch-kafka: mvn (Apache Maven) is required" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch-kafka: java (JDK 17+) is required" >&2; exit 1; }

mkdir -p "$HOME_DIR"
# Download into a temporary directory and rename at the end, so an interrupted
# run never leaves a half-filled lib/ that looks complete.
TMP_LIB="$HOME_DIR/lib.tmp.$$"
trap 'rm -rf "$TMP_LIB"' EXIT
cat > "$HOME_DIR/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.somafractal.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM

echo "fetch-kafka: downloading kafka_2.13 $KAFKA_VERSION and dependencies from Maven Central" >&2
mvn -q -B -f "$HOME_DIR/pom.xml" \
  -Dmaven.repo.local="$CACHE/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$TMP_LIB" >&2

ls "$TMP_LIB"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
rm -rf "$LIB"
mv "$TMP_LIB" "$LIB"
touch "$STAMP"
echo "$LIB"
