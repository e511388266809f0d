; int13v.asm -- int13x.asm's calls on drive 0x81, a 2 MiB virtio-blk disk
; (-device virtio-blk-pci,disable-modern=on next to the IDE boot disk:
; record.sh's NAME@0+v), which SeaBIOS 1.16 serves with its virtio driver:
; geometry (08, 15: its translation heuristic on the config geometry),
; 41, EDD (48: 26, 30, 66 and 74 bytes: DPTE FFFF:FFFF, PCI/SCSI), CHS
; and extended reads of 128 and 127 sectors (two requests of at most 64),
; a write and its read-back, reads straddling and past the end, verify,
; seek, reset, ready, status, drive 0x82 (none), the IDE disk 0x80 in
; between.  Per call, to debugcon: AX, BX, CX, DX, CF, the DAP count
; (extended calls) and the first words of the buffer's two first sectors;
; then the 74-byte EDD 3.0 (T13) answer.  Sector 0 loads the table with
; INT 13h.  tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
BUF  equ 0x9000
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov ax, 0x0200 + (data_end - table + 511) / 512
  mov cx, 0x0002
  xor dh, dh
  mov bx, 0x7E00
  int 0x13
  mov bp, table
next:
  cmp bp, table_end
  jae done
  xor eax, eax
  mov [BUF], eax
  mov [BUF + 512], eax
  mov ax, [bp]
  mov bx, [bp + 2]
  mov cx, [bp + 4]
  mov dx, [bp + 6]
  mov si, [bp + 8]
  push bp
  stc
  int 0x13
  pop bp
  pushf
  call put2             ; AX
  mov ax, bx
  call put2
  mov ax, cx
  call put2
  mov ax, dx
  call put2
  pop ax
  and al, 1
  out DBGC, al
  mov si, [bp + 8]
  test si, si
  jz .nodap
  mov ax, [si + 2]
  call put2
.nodap:
  mov ax, [BUF]
  call put2
  mov ax, [BUF + 512]
  call put2
  add bp, 10
  jmp next
done:
  ; the EDD answers as AH=48 left them
  mov si, edd
  mov cx, edd_end - edd
.e:
  lodsb
  out DBGC, al
  loop .e
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
put2:
  out DBGC, al
  mov al, ah
  out DBGC, al
  ret
%ifdef PART_HEADS
  ; one partition entry: QEMU takes the disk geometry from it
  times 0x1BE-($-$$) db 0
  db 0x80, 1, 1, 0, 0x83, PART_HEADS - 1, PART_SPT, 0xFF
  dd PART_SPT, 0x1000
%endif
  times 510-($-$$) db 0
  dw 0xAA55

%macro CALL13 5   ; ax, bx, cx, dx, si
  dw %1, %2, %3, %4, %5
%endmacro
table:
  CALL13 0x0800, 0, 0, 0x0081, 0        ; geometry
  CALL13 0x1500, 0, 0, 0x0081, 0        ; size
  CALL13 0x4100, 0x55AA, 0, 0x0081, 0   ; extensions
  CALL13 0x0000, 0, 0, 0x0081, 0        ; reset
  CALL13 0x1000, 0, 0, 0x0081, 0        ; ready
  CALL13 0x0100, 0, 0, 0x0081, 0        ; status
  CALL13 0x0202, BUF, 0x0001, 0x0081, 0 ; CHS 0/0/1 x2
  CALL13 0x0280, 0xA000, 0x0001, 0x0181, 0 ; x128 at 0000:A000 (two requests)
  CALL13 0x0201, BUF, 0x0301, 0x0081, 0 ; cylinder 3
  CALL13 0x0201, BUF, 0x0401, 0x0081, 0 ; cylinder 4: past the LCHS end
  CALL13 0x0201, BUF, 0x0001, 0x0080, 0 ; the IDE disk in between
  CALL13 0x4200, 0, 0, 0x0081, dap1     ; LBA 0x20 x2
  CALL13 0x4200, 0, 0, 0x0081, dap127   ; 127 sectors
  CALL13 0x4200, 0, 0, 0x0081, daplast  ; LBA 0xFFF x2: straddles the end
  CALL13 0x0100, 0, 0, 0x0081, 0        ; status after it
  CALL13 0x4200, 0, 0, 0x0081, dapend   ; LBA 0x1000
  CALL13 0x4200, 0, 0, 0x0081, dap0     ; count 0
  CALL13 0x4200, 0, 0, 0x0081, dap129   ; more than 64 KiB
  CALL13 0x4300, 0, 0, 0x0081, dapw     ; write LBA 0x300 x1
  CALL13 0x4200, 0, 0, 0x0081, dapr     ; read it back
  CALL13 0x0301, 0x7C00, 0x0A01, 0x0081, 0 ; CHS write 10/0/1 -> past 4 cyls
  CALL13 0x0301, 0x7C00, 0x0201, 0x0081, 0 ; CHS write 2/0/1 = LBA 2016
  CALL13 0x0201, BUF, 0x0201, 0x0081, 0 ; read it back
  CALL13 0x0403, BUF, 0x0001, 0x0081, 0 ; verify
  CALL13 0x4400, 0, 0, 0x0081, dap1     ; extended verify
  CALL13 0x4700, 0, 0, 0x0081, dap1     ; seek
  CALL13 0x4800, 0, 0, 0x0081, edd      ; EDD, 26 bytes
  CALL13 0x4800, 0, 0, 0x0081, edd30    ; EDD 2.x
  CALL13 0x4800, 0, 0, 0x0081, edd66    ; EDD 3.0, 66 bytes
  CALL13 0x4800, 0, 0, 0x0081, edd74    ; EDD 3.0, T13's 74 bytes
  CALL13 0x4800, 0, 0, 0x0081, edd25    ; too small
  CALL13 0x0201, BUF, 0x0001, 0x0082, 0 ; drive 0x82: none
  CALL13 0x0800, 0, 0, 0x0080, 0        ; the IDE disk: 2 disks now
  CALL13 0x0100, 0, 0, 0x0081, 0
table_end:
align 4
%macro DAP 4   ; count, offset, segment, lba
  db 16, 0
  dw %1, %2, %3
  dq %4
%endmacro
dap1:   DAP 2, BUF, 0, 0x20
dap127: DAP 127, 0, 0x2000, 0x40
daplast: DAP 2, BUF, 0, 0xFFF
dapend: DAP 1, BUF, 0, 0x1000
dap0:   DAP 0, BUF, 0, 0x20
dap129: DAP 129, 0, 0x2000, 0x40
dapw:   DAP 1, 0x7C00, 0, 0x300
dapr:   DAP 1, BUF, 0, 0x300
edd:    dw 26
        times 24 db 0xEE
edd30:  dw 30
        times 28 db 0xEE
edd66:  dw 66
        times 64 db 0xEE
edd74:  dw 74
        times 72 db 0xEE
edd25:  dw 25
        times 24 db 0xEE
edd_end:
data_end:
  align 512, db 0
