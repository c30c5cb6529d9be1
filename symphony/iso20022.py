"""ISO 20022 messages of the bank/RTGS rail, built and read with pyiso20022's models.

pyiso20022 ships xsdata dataclasses generated from the ISO 20022 XSDs; every
message here is such a dataclass tree serialised by xsdata, never a string
template. The relayer sends a pacs.008.001.08 (FI-to-FI customer credit
transfer, one transaction per message) and asks for status with a
pacs.028.001.03; the rail answers both with a pacs.002.001.10; its end-of-day
statement is a camt.053.001.08. The rail simulator uses the same functions from
the other side, and reconciliation reads the camt.053 with them.

Reading: `*_parse` decode a message into the pyiso20022 model (xsdata), which
checks it against the schema's structure but costs about a millisecond a
message. On the dispatch path (the relayer reading a pacs.002, the simulator a
pacs.008 or pacs.028) `*_read` take the same fields with xml.etree (C) by the
element paths named in each function, and hand the message to the `*_parse`
decoder whenever it is not what they expect (not well-formed, another root,
a missing required element, a value they cannot convert), so an error is
reported by the decoder, in its words. tests/relayer/test_real_rails.py
checks that both give the same result.

Identifiers (symphony.rail_handles): InstrId = TxId = rail_id35(outbox id), the
idempotency handle; EndToEndId = the outbox id as 32 hex digits (the payment's
reference, echoed on the statement); UETR = rail_uuid(outbox id).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pyiso20022.camt.camt_053_001_08 import camt_053_001_08 as camt053
from pyiso20022.pacs.pacs_002_001_10 import pacs_002_001_10 as pacs002
from pyiso20022.pacs.pacs_008_001_08 import pacs_008_001_08 as pacs008
from pyiso20022.pacs.pacs_028_001_03 import pacs_028_001_03 as pacs028
import xml.etree.ElementTree as ET
from decimal import InvalidOperation

from xsdata.exceptions import ParserError
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig
from xsdata.models.datatype import XmlDateTime

PACS008_NS = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"
PACS002_NS = "urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10"
PACS028_NS = "urn:iso:std:iso:20022:tech:xsd:pacs.028.001.03"
CAMT053_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
CONTENT_TYPE = "application/xml"

_serializer = XmlSerializer(config=SerializerConfig(xml_declaration=True, encoding="UTF-8"))
_parser = XmlParser()


class MessageError(ValueError):
    """A message that is not well-formed XML of the expected ISO 20022 message."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """The fields of one pacs.008 transaction that Symphony sets and the rail checks."""

    msg_id: str
    tx_id: str
    end_to_end_id: str
    uetr: str
    amount: Decimal
    currency: str
    debtor_agent_bic: str
    creditor_agent_bic: str
    creditor_account: str
    settlement_date: dt.date


@dataclass(frozen=True, slots=True)
class Status:
    """One pacs.002 transaction status: ACSC settled, ACCP/ACSP/PDNG pending, RJCT rejected."""

    tx_id: str
    status: str
    reason: str | None
    reference: str | None


def _now() -> XmlDateTime:
    return XmlDateTime.from_datetime(dt.datetime.now(dt.UTC).replace(microsecond=0))


def _agent(bic: str) -> pacs008.BranchAndFinancialInstitutionIdentification6:
    return pacs008.BranchAndFinancialInstitutionIdentification6(
        fin_instn_id=pacs008.FinancialInstitutionIdentification18(bicfi=bic))


def _serialise(document: Any, namespace: str) -> bytes:
    return _serializer.render(document, ns_map={None: namespace}).encode()


def _parse(data: bytes, cls: type[Any]) -> Any:
    try:
        return _parser.from_bytes(data, cls)
    except (ParserError, ValueError, TypeError, AttributeError) as exc:
        raise MessageError(f"not a valid {cls.__module__.rsplit('.', 1)[-1]} document: {exc}"[:300]) from None


def pacs008_build(transfer: Transfer) -> bytes:
    """One FIToFICstmrCdtTrf with one transaction, settled through the clearing system."""
    tx = pacs008.CreditTransferTransaction39(
        pmt_id=pacs008.PaymentIdentification7(instr_id=transfer.tx_id, end_to_end_id=transfer.end_to_end_id,
                                              tx_id=transfer.tx_id, uetr=transfer.uetr),
        intr_bk_sttlm_amt=pacs008.ActiveCurrencyAndAmount(value=transfer.amount, ccy=transfer.currency),
        intr_bk_sttlm_dt=pacs008.XmlDate.from_date(transfer.settlement_date),
        chrg_br=pacs008.ChargeBearerType1Code.SLEV,
        dbtr=pacs008.PartyIdentification135(nm="Symphony participant"),
        dbtr_agt=_agent(transfer.debtor_agent_bic),
        cdtr_agt=_agent(transfer.creditor_agent_bic),
        cdtr=pacs008.PartyIdentification135(nm="Beneficiary"),
        cdtr_acct=pacs008.CashAccount38(id=pacs008.AccountIdentification4Choice(
            othr=pacs008.GenericAccountIdentification1(id=transfer.creditor_account))),
    )
    header = pacs008.GroupHeader93(msg_id=transfer.msg_id, cre_dt_tm=_now(), nb_of_txs="1",
                                   sttlm_inf=pacs008.SettlementInstruction7(
                                       sttlm_mtd=pacs008.SettlementMethod1Code.CLRG))
    document = pacs008.Document(fito_ficstmr_cdt_trf=pacs008.FitoFicustomerCreditTransferV08(
        grp_hdr=header, cdt_trf_tx_inf=[tx]))
    return _serialise(document, PACS008_NS)


def pacs008_parse(data: bytes) -> Transfer:
    """The one transaction of a pacs.008 (MessageError if it has not exactly one)."""
    document = _parse(data, pacs008.Document)
    message = document.fito_ficstmr_cdt_trf
    if len(message.cdt_trf_tx_inf) != 1:
        raise MessageError("exactly one CdtTrfTxInf per pacs.008 is accepted")
    tx = message.cdt_trf_tx_inf[0]
    account = tx.cdtr_acct.id.othr.id if tx.cdtr_acct and tx.cdtr_acct.id.othr else ""
    if not tx.pmt_id.tx_id or tx.intr_bk_sttlm_dt is None:
        raise MessageError("TxId and IntrBkSttlmDt are required")
    return Transfer(msg_id=message.grp_hdr.msg_id, tx_id=tx.pmt_id.tx_id, end_to_end_id=tx.pmt_id.end_to_end_id,
                    uetr=tx.pmt_id.uetr or "", amount=tx.intr_bk_sttlm_amt.value, currency=tx.intr_bk_sttlm_amt.ccy,
                    debtor_agent_bic=tx.dbtr_agt.fin_instn_id.bicfi or "",
                    creditor_agent_bic=tx.cdtr_agt.fin_instn_id.bicfi or "", creditor_account=account,
                    settlement_date=tx.intr_bk_sttlm_dt.to_date())


def pacs028_build(msg_id: str, tx_id: str) -> bytes:
    """A status request for one original transaction, named by its TxId."""
    document = pacs028.Document(fito_fipmt_sts_req=pacs028.FitoFipaymentStatusRequestV03(
        grp_hdr=pacs028.GroupHeader91(msg_id=msg_id, cre_dt_tm=_now()),
        tx_inf=[pacs028.PaymentTransaction113(sts_req_id=msg_id, orgnl_tx_id=tx_id)]))
    return _serialise(document, PACS028_NS)


def pacs028_parse(data: bytes) -> str:
    """The TxId a pacs.028 asks about."""
    document = _parse(data, pacs028.Document)
    infos = document.fito_fipmt_sts_req.tx_inf
    if len(infos) != 1 or not infos[0].orgnl_tx_id:
        raise MessageError("exactly one TxInf with OrgnlTxId per pacs.028 is accepted")
    return str(infos[0].orgnl_tx_id)


def pacs002_build(msg_id: str, original_msg_id: str, original_name: str, status: Status) -> bytes:
    """A status report for one transaction (reason as an ISO external status reason code)."""
    reasons = [pacs002.StatusReasonInformation12(rsn=pacs002.StatusReason6Choice(cd=status.reason))] \
        if status.reason else []
    tx = pacs002.PaymentTransaction110(orgnl_tx_id=status.tx_id, tx_sts=status.status, sts_rsn_inf=reasons,
                                       acct_svcr_ref=status.reference)
    document = pacs002.Document(fito_fipmt_sts_rpt=pacs002.FitoFipaymentStatusReportV10(
        grp_hdr=pacs002.GroupHeader91(msg_id=msg_id, cre_dt_tm=_now()),
        orgnl_grp_inf_and_sts=[pacs002.OriginalGroupHeader17(orgnl_msg_id=original_msg_id,
                                                             orgnl_msg_nm_id=original_name)],
        tx_inf_and_sts=[tx]))
    return _serialise(document, PACS002_NS)


def pacs002_parse(data: bytes) -> Status:
    """The one transaction status of a pacs.002."""
    document = _parse(data, pacs002.Document)
    infos = document.fito_fipmt_sts_rpt.tx_inf_and_sts
    if len(infos) != 1 or not infos[0].tx_sts:
        raise MessageError("exactly one TxInfAndSts with TxSts per pacs.002 is expected")
    info = infos[0]
    reason = info.sts_rsn_inf[0].rsn.cd if info.sts_rsn_inf and info.sts_rsn_inf[0].rsn else None
    return Status(tx_id=str(info.orgnl_tx_id or ""), status=str(info.tx_sts), reason=reason,
                  reference=info.acct_svcr_ref)


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One booked debit of the settlement account, as a camt.053 Ntry carries it."""

    tx_id: str
    end_to_end_id: str
    amount: Decimal
    currency: str
    creditor_account: str
    reference: str
    booked_on: dt.date


def camt053_build(msg_id: str, account: str, currency: str, entries: list[StatementEntry]) -> bytes:
    """A statement of the settlement account: one debit entry (DBIT, BOOK) per executed transfer."""
    items = []
    for entry in entries:
        refs = camt053.TransactionReferences6(end_to_end_id=entry.end_to_end_id, tx_id=entry.tx_id,
                                              acct_svcr_ref=entry.reference)
        parties = camt053.TransactionParties6(cdtr_acct=camt053.CashAccount38(
            id=camt053.AccountIdentification4Choice(othr=camt053.GenericAccountIdentification1(
                id=entry.creditor_account))))
        amount = camt053.ActiveOrHistoricCurrencyAndAmount(value=entry.amount, ccy=entry.currency)
        details = camt053.EntryDetails9(tx_dtls=[camt053.EntryTransaction10(refs=refs, amt=amount,
                                                                            cdt_dbt_ind=camt053.CreditDebitCode.DBIT,
                                                                            rltd_pties=parties)])
        items.append(camt053.ReportEntry10(
            ntry_ref=entry.tx_id, amt=amount, cdt_dbt_ind=camt053.CreditDebitCode.DBIT,
            sts=camt053.EntryStatus1Choice(cd="BOOK"),
            bookg_dt=camt053.DateAndDateTime2Choice(dt=camt053.XmlDate.from_date(entry.booked_on)),
            acct_svcr_ref=entry.reference,
            bk_tx_cd=camt053.BankTransactionCodeStructure4(domn=camt053.BankTransactionCodeStructure5(
                cd="PMNT", fmly=camt053.BankTransactionCodeStructure6(cd="ICDT", sub_fmly_cd="DMCT"))),
            ntry_dtls=[details]))
    statement = camt053.AccountStatement9(
        id=msg_id, cre_dt_tm=_now(),
        acct=camt053.CashAccount39(id=camt053.AccountIdentification4Choice(
            othr=camt053.GenericAccountIdentification1(id=account)), ccy=currency),
        ntry=items)
    document = camt053.Document(bk_to_cstmr_stmt=camt053.BankToCustomerStatementV08(
        grp_hdr=camt053.GroupHeader81(msg_id=msg_id, cre_dt_tm=_now()), stmt=[statement]))
    return _serialise(document, CAMT053_NS)


def camt053_entry_parse(data: bytes) -> StatementEntry:
    """One `<Ntry>` element (serialised on its own, in the camt.053 namespace) as a StatementEntry."""
    entry = _parse(data, camt053.ReportEntry10)
    details = entry.ntry_dtls[0].tx_dtls[0] if entry.ntry_dtls and entry.ntry_dtls[0].tx_dtls else None
    refs = details.refs if details is not None and details.refs is not None else camt053.TransactionReferences6()
    account = ""
    if details is not None and details.rltd_pties and details.rltd_pties.cdtr_acct \
            and details.rltd_pties.cdtr_acct.id and details.rltd_pties.cdtr_acct.id.othr:
        account = details.rltd_pties.cdtr_acct.id.othr.id
    booked = entry.bookg_dt.dt.to_date() if entry.bookg_dt and entry.bookg_dt.dt else dt.date(1970, 1, 1)
    sign = -1 if entry.cdt_dbt_ind == camt053.CreditDebitCode.CRDT else 1
    return StatementEntry(tx_id=refs.tx_id or entry.ntry_ref or "", end_to_end_id=refs.end_to_end_id or "",
                          amount=sign * entry.amt.value, currency=entry.amt.ccy, creditor_account=account,
                          reference=entry.acct_svcr_ref or "", booked_on=booked)


def end_to_end_id(outbox_id: uuid.UUID) -> str:
    """The outbox id as 32 hex digits: the EndToEndId (Max35Text) Symphony sends."""
    return outbox_id.hex


# -- fast readers (see the module docstring) --------------------------------------


def _body(data: bytes, namespace: str, message: str) -> tuple[ET.Element, str] | None:
    """The message element under <Document> (and the namespace prefix for paths), or None."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    ns = "{" + namespace + "}"
    if root.tag != ns + "Document" or len(root) != 1 or root[0].tag != ns + message:
        return None
    return root[0], ns


def pacs008_read(data: bytes) -> Transfer:
    """pacs008_parse's Transfer, read by FIToFICstmrCdtTrf/{GrpHdr/MsgId, CdtTrfTxInf/...}."""
    found = _body(data, PACS008_NS, "FIToFICstmrCdtTrf")
    if found is None:
        return pacs008_parse(data)
    message, ns = found
    txs = message.findall(ns + "CdtTrfTxInf")
    msg_id = message.findtext(f"{ns}GrpHdr/{ns}MsgId")
    if len(txs) != 1 or msg_id is None:
        return pacs008_parse(data)
    tx = txs[0]
    tx_id = tx.findtext(f"{ns}PmtId/{ns}TxId")
    end_to_end = tx.findtext(f"{ns}PmtId/{ns}EndToEndId")
    amount = tx.find(ns + "IntrBkSttlmAmt")
    settled = tx.findtext(ns + "IntrBkSttlmDt")
    debtor_agent, creditor_agent = tx.find(f"{ns}DbtrAgt/{ns}FinInstnId"), tx.find(f"{ns}CdtrAgt/{ns}FinInstnId")
    if not tx_id or end_to_end is None or amount is None or not amount.get("Ccy") or not settled \
            or debtor_agent is None or creditor_agent is None:
        return pacs008_parse(data)
    try:
        value = Decimal(amount.text or "")
        settlement_date = dt.date.fromisoformat(settled)
    except (InvalidOperation, ValueError):
        return pacs008_parse(data)
    return Transfer(msg_id=msg_id, tx_id=tx_id, end_to_end_id=end_to_end, uetr=tx.findtext(f"{ns}PmtId/{ns}UETR") or "",
                    amount=value, currency=amount.get("Ccy", ""),
                    debtor_agent_bic=debtor_agent.findtext(ns + "BICFI") or "",
                    creditor_agent_bic=creditor_agent.findtext(ns + "BICFI") or "",
                    creditor_account=tx.findtext(f"{ns}CdtrAcct/{ns}Id/{ns}Othr/{ns}Id") or "",
                    settlement_date=settlement_date)


def pacs028_read(data: bytes) -> str:
    """pacs028_parse's TxId, read by FIToFIPmtStsReq/TxInf/OrgnlTxId."""
    found = _body(data, PACS028_NS, "FIToFIPmtStsReq")
    if found is None:
        return pacs028_parse(data)
    message, ns = found
    infos = message.findall(ns + "TxInf")
    tx_id = infos[0].findtext(ns + "OrgnlTxId") if len(infos) == 1 else None
    if not tx_id or message.find(f"{ns}GrpHdr/{ns}MsgId") is None:
        return pacs028_parse(data)
    return tx_id


def pacs002_read(data: bytes) -> Status:
    """pacs002_parse's Status, read by FIToFIPmtStsRpt/TxInfAndSts/{OrgnlTxId, TxSts,
    StsRsnInf[1]/Rsn/Cd, AcctSvcrRef}."""
    found = _body(data, PACS002_NS, "FIToFIPmtStsRpt")
    if found is None:
        return pacs002_parse(data)
    message, ns = found
    infos = message.findall(ns + "TxInfAndSts")
    status = infos[0].findtext(ns + "TxSts") if len(infos) == 1 else None
    if not status or message.find(f"{ns}GrpHdr/{ns}MsgId") is None:
        return pacs002_parse(data)
    info = infos[0]
    first_reason = info.find(ns + "StsRsnInf")
    code = first_reason.find(f"{ns}Rsn/{ns}Cd") if first_reason is not None else None
    return Status(tx_id=info.findtext(ns + "OrgnlTxId") or "", status=status,
                  reason=code.text or "" if code is not None else None,
                  reference=info.findtext(ns + "AcctSvcrRef"))
