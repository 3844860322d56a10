"""Each log parser on hand-written samples of its format: which fields land where, what is rejected."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.schema import format_ts
from sensors.logs.parsers import ParseContext, ParseError, detect_format, make_parser

CTX = ParseContext.make(sensor="t", year=2024)


def parse(fmt: str, line: str, filename: str = "", ctx: ParseContext = CTX) -> dict[str, Any]:
    event = make_parser(fmt, ctx, filename).parse(line, "test:1")
    assert event is not None
    return event


def iso(event: dict[str, Any]) -> str:
    return format_ts(event["ts"])


# -- Zeek ------------------------------------------------------------------------------------------

ZEEK_TSV = """#separator \\x09
#set_separator\t,
#empty_field\t(empty)
#unset_field\t-
#path\tdns
#open\t2024-04-12-19-29-12
#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tquery\tqtype_name\trcode_name\tAA\tanswers\tTTLs
#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tstring\tstring\tbool\tvector[string]\tvector[interval]
1521911720.865716\tCq1\t10.47.1.100\t41772\t10.0.0.100\t53\tudp\tise.wrccdc.org\tA\tNOERROR\tF\ta.b,1.2.3.4\t1.0,2.0
1521911721.000000\tCq2\tfe80::1\t5353\tff02::fb\t5353\tudp\t-\t-\t-\tT\t(empty)\t-"""


def test_zeek_tsv_headers_types_and_columns() -> None:
    parser = make_parser("zeek", CTX)
    out = [parser.parse(line, f"dns.log:{i}") for i, line in enumerate(ZEEK_TSV.splitlines())]
    assert out[:8] == [None] * 8
    first, second = out[8], out[9]
    assert first is not None and second is not None
    assert first["source_type"] == "zeek_dns" and first["event_category"] == "dns"
    assert iso(first) == "2018-03-24T17:15:20.866Z"
    assert (first["src_ip"], first["src_port"], first["dst_ip"], first["dst_port"]) == ("10.47.1.100", 41772,
                                                                                      "10.0.0.100", 53)
    assert first["dns_query"] == "ise.wrccdc.org" and first["dns_qtype"] == "A" and first["dns_rcode"] == "NOERROR"
    assert first["dns_answers"] == ["a.b", "1.2.3.4"]
    assert first["extra"]["uid"] == "Cq1" and first["extra"]["AA"] == "false" and first["extra"]["TTLs"] == \
        '["1.0","2.0"]'
    assert second["src_ip"] == "fe80::1" and "dns_query" not in second and "dns_answers" not in second


def test_zeek_json_path_and_log_specific_fields() -> None:
    line = ('{"_path":"ssl","ts":"2018-03-24T17:15:20.615923Z","uid":"C1","id.orig_h":"10.164.94.120",'
            '"id.orig_p":39611,"id.resp_h":"10.47.3.200","id.resp_p":443,"version":"TLSv12",'
            '"cipher":"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA","server_name":"mail.example.org","established":true}')
    event = parse("zeek", line)
    assert event["source_type"] == "zeek_ssl" and event["event_category"] == "tls"
    assert event["tls_version"] == "TLSv12" and event["tls_sni"] == "mail.example.org"
    assert event["extra"]["established"] == "true"
    ssh = parse("zeek", '{"ts":1521911720.5,"uid":"C2","id.orig_h":"1.2.3.4","auth_success":false}', "ssh.log")
    assert ssh["source_type"] == "zeek_ssh" and ssh["action"] == "failure"


def test_zeek_rejects() -> None:
    parser = make_parser("zeek", CTX)
    with pytest.raises(ParseError, match="before any #fields"):
        parser.parse("1\t2\t3", "x")
    with pytest.raises(ParseError, match="unknown Zeek log"):
        parser.parse('{"ts": 1}', "x")
    parser.parse("#fields\tts\tuid", "x")
    with pytest.raises(ParseError, match="3 values for 2"):
        parser.parse("1\t2\t3", "x")


# -- Suricata EVE ---------------------------------------------------------------------------------------

def test_eve_alert_flow_dns_http_tls() -> None:
    alert = parse("eve", '{"timestamp":"2024-03-01T10:00:00.123456+0800","event_type":"alert","src_ip":"10.0.0.5",'
                         '"src_port":5555,"dest_ip":"8.8.8.8","dest_port":80,"proto":"TCP","alert":{"action":"allowed",'
                         '"signature_id":2019401,"signature":"ET POLICY curl UA","category":"Policy","severity":2}}')
    assert iso(alert) == "2024-03-01T02:00:00.123Z"
    assert alert["event_category"] == "alert" and alert["severity"] == "error" and alert["protocol"] == "tcp"
    assert alert["message"] == "ET POLICY curl UA" and alert["extra"]["alert.signature_id"] == "2019401"
    flow = parse("eve", '{"timestamp":"2024-03-01T10:00:00Z","event_type":"flow","src_ip":"10.0.0.5","dest_ip":'
                        '"10.0.0.6","proto":"UDP","app_proto":"dns","flow":{"pkts_toserver":3,"pkts_toclient":2,'
                        '"bytes_toserver":300,"bytes_toclient":200,"start":"2024-03-01T10:00:00.000000+0000",'
                        '"end":"2024-03-01T10:00:02.500000+0000","state":"established"}}')
    assert (flow["packets_out"], flow["packets_in"], flow["bytes_out"], flow["bytes_in"]) == (3, 2, 300, 200)
    assert flow["duration"] == 2.5 and flow["event_category"] == "network_connection"
    dns = parse("eve", '{"timestamp":"2024-03-01T10:00:00Z","event_type":"dns","src_ip":"10.0.0.5","dest_ip":'
                       '"10.0.0.53","dns":{"version":2,"type":"answer","rrname":"example.com","rrtype":"A",'
                       '"rcode":"NOERROR","answers":[{"rrname":"example.com","rrtype":"A","ttl":60,'
                       '"rdata":"93.184.216.34"}]}}')
    assert dns["dns_query"] == "example.com" and dns["dns_answers"] == ["93.184.216.34"]
    http = parse("eve", '{"timestamp":"2024-03-01T10:00:00Z","event_type":"http","src_ip":"10.0.0.5","dest_ip":'
                        '"10.0.0.80","http":{"hostname":"oa.gov","url":"/login?x=1","http_user_agent":"curl/8",'
                        '"http_method":"POST","status":302,"length":10}}')
    assert (http["http_host"], http["http_uri"], http["http_method"], http["http_status"]) == (
        "oa.gov", "/login?x=1", "POST", 302)
    tls = parse("eve", '{"timestamp":"2024-03-01T10:00:00Z","event_type":"tls","tls":{"sni":"x.org",'
                       '"version":"TLS 1.3","ja3":{"hash":"abc"},"ja4":"t13d"}}')
    assert (tls["tls_sni"], tls["tls_ja3"], tls["tls_ja4"]) == ("x.org", "abc", "t13d")


def test_eve_rejects_non_eve() -> None:
    with pytest.raises(ParseError, match="not an EVE record"):
        parse("eve", '{"a": 1}')
    with pytest.raises(ParseError, match="invalid JSON"):
        parse("eve", '{"a": ')


# -- web ----------------------------------------------------------------------------------------------

def test_access_combined_and_common() -> None:
    line = ('203.0.113.7 - alice [10/Oct/2023:13:55:36 +0800] "GET /index.php?id=1%27 HTTP/1.1" 200 2326 '
            '"http://example.com/start" "Mozilla/5.0 (X11)" "10.1.1.1"')
    event = parse("nginx", line)
    assert event["source_type"] == "nginx_access" and iso(event) == "2023-10-10T05:55:36.000Z"
    assert (event["src_ip"], event["user_name"], event["http_method"], event["http_uri"], event["http_status"],
            event["bytes_in"]) == ("203.0.113.7", "alice", "GET", "/index.php?id=1%27", 200, 2326)
    assert event["extra"]["cs-uri-stem"] == "/index.php" and event["extra"]["cs-uri-query"] == "id=1%27"
    assert event["http_user_agent"] == "Mozilla/5.0 (X11)" and event["extra"]["x_forwarded_for"] == "10.1.1.1"
    common = parse("apache", '10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "\\x16\\x03\\x01" 400 -')
    assert common["source_type"] == "apache_access" and common["extra"]["request"] == "\\x16\\x03\\x01"
    with pytest.raises(ParseError, match="impossible"):
        parse("nginx", '1.2.3.4 - - [31/Feb/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1')


def test_error_logs() -> None:
    apache22 = parse("weberror", "[Sun Dec 04 04:47:44 2005] [error] [client 1.2.3.4] Directory index forbidden")
    assert apache22["source_type"] == "apache_error" and apache22["severity"] == "error"
    assert apache22["src_ip"] == "1.2.3.4" and apache22["message"] == "Directory index forbidden"
    apache24 = parse("weberror", "[Wed Oct 11 14:32:52.123456 2023] [core:error] [pid 35708:tid 4328636416] "
                                 "[client 10.0.0.9:51234] AH00126: Invalid URI in request")
    assert apache24["src_port"] == 51234 and apache24["extra"]["module"] == "core"
    assert iso(apache24) == "2023-10-11T14:32:52.123Z"
    nginx = parse("weberror", '2024/01/02 12:00:00 [error] 1234#0: *5 open() "/var/www/x" failed (2: No such file), '
                              'client: 10.0.0.7, server: oa.gov, request: "GET /x HTTP/1.1", host: "oa.gov"')
    assert nginx["source_type"] == "nginx_error" and nginx["src_ip"] == "10.0.0.7" and nginx["http_uri"] == "/x"
    assert nginx["message"] == 'open() "/var/www/x" failed (2: No such file)'


# -- syslog and the messages it carries ----------------------------------------------------------------

def test_rfc5424_with_structured_data() -> None:
    event = parse("syslog", '<165>1 2024-03-01T10:00:00.123+08:00 fw01 app 42 ID47 [exampleSDID@32473 iut="3" '
                            'eventSource="App\\"lication"][meta seq="7"] \ufeffAn application event')
    assert iso(event) == "2024-03-01T02:00:00.123Z" and event["host_name"] == "fw01"
    assert event["severity"] == "notice" and event["extra"]["facility"] == "local4"
    assert event["extra"]["sd.exampleSDID@32473.eventSource"] == 'App"lication'
    assert event["extra"]["sd.meta.seq"] == "7" and event["message"] == "An application event"
    assert event["source_type"] == "linux_syslog"


def test_rfc3164_year_timezone_and_received_time() -> None:
    shanghai = ParseContext.make(timezone="Asia/Shanghai", year=2024)
    event = parse("syslog", "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
                  ctx=shanghai)
    assert iso(event) == "2024-10-11T14:14:15.000Z" and event["severity"] == "critical"
    assert event["extra"]["program"] == "su" and event["host_name"] == "mymachine"
    with pytest.raises(ParseError, match="no timestamp"):
        parse("syslog", "<13>no header at all")
    from dataclasses import replace

    live = parse("syslog", "<13>no header at all", ctx=replace(CTX, received_ms=1_700_000_000_000))
    assert live["ts"] == 1_700_000_000_000 and live["message"] == "no header at all"
    with pytest.raises(ParseError, match="out of range"):
        parse("syslog", "<999>Oct 11 22:14:15 host x: y")


SSHD = [
    ("Accepted publickey for ops from 10.1.2.3 port 50022 ssh2: RSA SHA256:abc", "success", "ops", "10.1.2.3", 50022),
    ("Failed password for invalid user admin from 203.0.113.5 port 4242 ssh2", "failure", "admin", "203.0.113.5", 4242),
    ("Failed password for root from 203.0.113.5 port 4243 ssh2", "failure", "root", "203.0.113.5", 4243),
    ("Invalid user test from 203.0.113.6 port 1000", "invalid_user", "test", "203.0.113.6", 1000),
    ("Received disconnect from 183.62.140.253: 11: Bye Bye [preauth]", "disconnect", None, "183.62.140.253", None),
    ("error: maximum authentication attempts exceeded for root from 1.2.3.4 port 22 ssh2 [preauth]", "failure",
     "root", "1.2.3.4", 22),
    ("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=5.6.7.8  user=root",
     "failure", "root", "5.6.7.8", None),
    ("Connection closed by authenticating user root 1.2.3.4 port 5 [preauth]", "disconnect", "root", "1.2.3.4", 5),
]


@pytest.mark.parametrize(("message", "action", "user", "ip", "port"), SSHD)
def test_sshd_messages(message: str, action: str, user: str | None, ip: str, port: int | None) -> None:
    event = parse("syslog", f"Mar  1 10:00:00 bastion sshd[123]: {message}")
    assert event["source_type"] == "sshd" and event["event_category"] == "auth" and event["action"] == action
    assert event.get("user_name") == user and event.get("src_ip") == ip and event.get("src_port") == port


def test_sudo_and_pam() -> None:
    ok = parse("syslog", "Mar  1 10:00:00 h sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
                         "COMMAND=/usr/bin/systemctl restart nginx")
    assert ok["source_type"] == "linux_auth" and ok["action"] == "success" and ok["user_name"] == "alice"
    assert ok["process_command_line"] == "/usr/bin/systemctl restart nginx" and ok["extra"]["sudo_user"] == "root"
    bad = parse("syslog", "Mar  1 10:00:00 h sudo:    bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; "
                          "USER=root ; COMMAND=/bin/sh")
    assert bad["action"] == "failure" and bad["user_name"] == "bob"
    su = parse("syslog", "Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)")
    assert su["source_type"] == "linux_auth" and su["action"] == "session_opened" and su["user_name"] == "cyrus"


def test_netfilter() -> None:
    event = parse("syslog", "Mar  1 10:00:00 gw kernel: [12345.678901] IPTABLES-INPUT-DROP: IN=eth0 OUT= "
                            "MAC=00:11:22:33:44:55:66:77:88:99:aa:bb:08:00 SRC=198.51.100.9 DST=10.0.0.1 LEN=60 "
                            "TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=51234 DPT=22 WINDOW=29200 RES=0x00 "
                            "SYN URGP=0")
    assert event["source_type"] == "iptables" and event["event_category"] == "firewall"
    assert (event["src_ip"], event["dst_ip"], event["protocol"], event["src_port"], event["dst_port"]) == (
        "198.51.100.9", "10.0.0.1", "tcp", 51234, 22)
    assert event["action"] == "denied" and event["extra"]["log_prefix"] == "IPTABLES-INPUT-DROP"
    assert event["extra"]["flags"] == "DF,SYN"
    ufw = parse("syslog", "Mar  1 10:00:00 gw kernel: [UFW ALLOW] IN=eth0 OUT= SRC=10.0.0.9 DST=10.0.0.1 PROTO=UDP "
                          "SPT=5353 DPT=53")
    assert ufw["action"] == "allowed" and ufw["protocol"] == "udp"


def test_vendor_firewalls() -> None:
    huawei = parse("syslog", "<190>Mar 10 2024 12:00:00 USG6000 %%01POLICY/6/POLICYDENY(l):vsys=public, protocol=6, "
                             "source-ip=10.1.1.1, source-port=1234, destination-ip=203.0.113.80, destination-port=80, "
                             "time=2024/3/10 12:00:00, source-zone=trust, destination-zone=untrust, "
                             "rule-name=deny_all.")
    assert huawei["source_type"] == "huawei_usg" and huawei["action"] == "denied" and huawei["protocol"] == "tcp"
    assert (huawei["src_ip"], huawei["src_port"], huawei["dst_ip"], huawei["dst_port"]) == (
        "10.1.1.1", 1234, "203.0.113.80", 80)
    assert huawei["extra"]["rule-name"] == "deny_all" and iso(huawei) == "2024-03-10T12:00:00.000Z"
    h3c = parse("syslog", "<134>Mar 10 12:00:00 2024 H3C %%10FILTER/6/FILTER_ZONE_IPV4_EXECUTION: "
                          "SrcZoneName(1025)=Trust;DstZoneName(1035)=Untrust;Type(1067)=ACL;SecurityPolicy(1072)="
                          "deny_all;RuleID(1078)=5;Protocol(1001)=TCP;Application(1002)=http;SrcIPAddr(1003)=10.1.1.2;"
                          "SrcPort(1004)=5000;DstIPAddr(1007)=1.1.1.1;DstPort(1008)=443;MatchCount(1069)=1;"
                          "Event(1048)=(8)Session denied;")
    assert h3c["source_type"] == "h3c_fw" and h3c["dst_port"] == 443 and h3c["app_protocol"] == "http"
    assert h3c["action"] == "denied" and h3c["extra"]["rule_name"] == "deny_all"
    hill = parse("syslog", "<190>Mar 10 12:00:00 SG-6000 Traffic@FLOW: SESSION: 10.10.10.1:51782->8.8.8.8:53(UDP), "
                           "application DNS, interface ethernet0/1, vr trust-vr, policy 1, user -@-, host -, "
                           "send packets 1,send bytes 74,receive packets 1,receive bytes 90,start time 2024-03-10 "
                           "11:59:59,close time 2024-03-10 12:00:00,session end")
    assert hill["source_type"] == "hillstone_fw" and hill["protocol"] == "udp" and hill["dst_port"] == 53
    assert (hill["bytes_out"], hill["bytes_in"], hill["packets_out"]) == (74, 90, 1) and hill["action"] == "allowed"
    forti = parse("syslog", '<189>Mar 10 12:00:00 fgt date=2024-03-10 time=12:00:00 devname="FG100" type="traffic" '
                            'srcip=10.2.2.2 srcport=40000 dstip=198.51.100.1 dstport=3389 proto=6 action="deny" '
                            'sentbyte=0 rcvdbyte=0 policyid=7')
    assert forti["source_type"] == "firewall_kv" and forti["action"] == "denied" and forti["dst_port"] == 3389
    assert forti["extra"]["devname"] == "FG100" and forti["protocol"] == "tcp"


def test_bind_file_and_syslog() -> None:
    line = ("21-Nov-2026 10:00:00.123 queries: info: client @0x7f2b8c0d1e20 10.0.0.5#53412 (evil.example): "
            "query: evil.example IN TXT +E(0)K (10.0.0.53)")
    event = parse("bind", line)
    assert event["source_type"] == "bind" and event["dns_query"] == "evil.example" and event["dns_qtype"] == "TXT"
    assert event["src_ip"] == "10.0.0.5" and event["dst_ip"] == "10.0.0.53" and iso(event) == "2026-11-21T10:00:00.123Z"
    via_syslog = parse("syslog", "Nov 21 10:00:00 ns1 named[812]: client 10.0.0.6#1000 (a.gov): query: a.gov IN A + "
                                 "(10.0.0.53)")
    assert via_syslog["source_type"] == "bind" and via_syslog["dns_query"] == "a.gov"


def test_cef_and_leef() -> None:
    cef = parse("cef", r"CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 "
                       r"dst=2.1.2.2 spt=1232 dpt=445 suser=bob act=blocked msg=Detected a threat\=yes with spaces "
                       r"cs1Label=Policy cs1=Strict rt=1700000000000")
    assert cef["source_type"] == "cef" and cef["severity"] == "critical" and cef["ts"] == 1_700_000_000_000
    assert (cef["src_ip"], cef["dst_port"], cef["user_name"], cef["action"]) == ("10.0.0.1", 445, "bob", "denied")
    assert cef["extra"]["Policy"] == "Strict" and cef["extra"]["device_vendor"] == "Security"
    assert cef["message"] == "worm successfully stopped"
    assert cef["extra"]["signature_id"] == "100"
    with pytest.raises(ParseError, match="header has"):
        parse("cef", "CEF:0|only|three")
    with pytest.raises(ParseError, match="without rt"):
        parse("cef", "CEF:0|a|b|1|2|name|3|src=1.2.3.4")
    leef = parse("syslog", "<13>Mar 10 12:00:00 qr LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=10.0.1.8^dst=10.0.0.5^"
                           "srcPort=5000^dstPort=22^usrName=joe^sev=5")
    assert leef["source_type"] == "leef" and leef["src_port"] == 5000 and leef["user_name"] == "joe"
    assert leef["severity"] == "warning"


def test_journald_dispatches_sshd() -> None:
    event = parse("journald", '{"__REALTIME_TIMESTAMP":"1700000000123456","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":'
                              '"sshd","_PID":"99","PRIORITY":"6","MESSAGE":"Failed password for root from 1.2.3.4 '
                              'port 22 ssh2","__CURSOR":"s=1"}')
    assert event["ts"] == 1_700_000_000_123 and event["source_type"] == "sshd" and event["action"] == "failure"
    assert event["host_name"] == "web1" and "__CURSOR" not in event["extra"]
    plain = parse("journald", '{"__REALTIME_TIMESTAMP":"1700000000000000","MESSAGE":[104,105]}')
    assert plain["source_type"] == "journald" and plain["message"] == "hi"


def test_proxifier_cbs_windows() -> None:
    px = parse("proxifier", "[10.30 16:49:07] chrome.exe *64 - proxy.cse.cuhk.edu.hk:5070 close, 403 bytes (1.2 KB) "
                            "sent, 426 bytes received, lifetime 00:01")
    assert px["process_image"] == "chrome.exe" and (px["bytes_out"], px["bytes_in"], px["duration"]) == (403, 426, 1)
    cbs = parse("cbs", "2016-09-28 04:30:31, Info                  CSI    00000001@2016/9/27:20:30:31.455 Wcp")
    assert cbs["source_type"] == "windows_cbs" and cbs["extra"]["component"] == "CSI"
    win = parse("windows", '{"@timestamp":"2024-03-01T10:00:00Z","winlog":{"event_id":4625,"channel":"Security",'
                           '"computer_name":"DC1","event_data":{"TargetUserName":"admin","IpAddress":"10.9.9.9",'
                           '"LogonType":"3"}}}')
    assert win["source_type"] == "windows" and win["action"] == "failure" and win["src_ip"] == "10.9.9.9"


@pytest.mark.parametrize(("line", "fmt"), [
    (ZEEK_TSV.splitlines()[0], "zeek"),
    ('{"_path":"conn","ts":1}', "zeek"),
    ('{"timestamp":"2024-01-01T00:00:00Z","event_type":"flow"}', "eve"),
    ('1.2.3.4 - - [10/Oct/2023:13:55:36 +0800] "GET / HTTP/1.1" 200 1 "-" "x"', "nginx"),
    ("[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok", "weberror"),
    ("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186", "syslog"),
    ("<13>1 2024-01-01T00:00:00Z h a - - - m", "syslog"),
    ('{"__REALTIME_TIMESTAMP":"1"}', "journald"),
    ("CEF:0|a|b|1|2|n|3|src=1.2.3.4", "cef"),
    ("[10.30 16:49:06] chrome.exe - a:1 open through proxy b:2 HTTPS", "proxifier"),
    ("2016-09-28 04:30:30, Info                  CBS    Loaded", "cbs"),
    ("21-Nov-2026 10:00:00.123 queries: info: client 1.2.3.4#1 (a): query: a IN A + (1.2.3.5)", "bind"),
    ('{"winlog":{"event_id":1}}', "windows"),
])
def test_detect_format(line: str, fmt: str) -> None:
    assert detect_format([line]) == fmt


def test_the_tailed_hosts_name_fills_records_that_name_none() -> None:
    ctx = ParseContext.make(sensor="t", host="portal")
    access = make_parser("nginx", ctx).parse(
        '10.0.0.9 - - [21/Nov/2026:10:00:00 +0800] "GET / HTTP/1.1" 200 5 "-" "curl"', "t:1")
    assert access is not None and access["host_name"] == "portal"
    logged = make_parser("syslog", ctx).parse("<38>Nov 21 10:00:00 mail sshd[1]: Accepted password for a from "
                                              "10.0.0.9 port 1 ssh2", "t:2")
    assert logged is not None and logged["host_name"] == "mail"  # a record that names its host keeps it
